// Package memory keeps a server command's memory close to what it uses:
// a soft limit for the Go runtime (memory_limit_bytes), and a trim that
// gives freed memory back to the system once the process has gone idle.
//
// The Go runtime grows the heap to twice what is live before it collects
// (GOGC 100), and after a burst it keeps the freed memory for reuse until
// its forced collection, two minutes later. For serve, which holds the
// API, the embedded NATS server and a worker in one process, that doubled
// an order's 10 MiB of kept output into ~30 MiB of RSS, and left an idle
// process ~10 MiB above what it held live (docs/benchmarks.md, "Memory").
package memory

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// SetLimit makes limit bytes the Go runtime's soft memory limit, or
// removes the limit when it is 0. The GOMEMLIMIT environment variable, when
// set, wins: the runtime has applied it already, and an operator who set it
// meant it. It returns the limit in effect (math.MaxInt64: none).
//
// The limit is soft: past it the collector runs more often, taking at most
// about half of the CPU, and the process never fails for it. Below it
// nothing changes, so a small-order load whose heap goal stays under the
// limit collects exactly as without one.
func SetLimit(limit int64, getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	if limit <= 0 {
		limit = noLimit
	}
	debug.SetMemoryLimit(limit)
	return limit
}

// noLimit is the runtime's "no limit" (math.MaxInt64).
const noLimit = 1<<63 - 1

// TrimWhenIdle returns freed heap memory to the system once no collection
// has run for a whole period (the process is idle: under any load the heap
// fills up and the collector runs far more often), until ctx ends. It
// trims once per idle stretch: two collections, so that what sync.Pools
// held (nats-server's block buffers among them) is freed too, then the
// freed pages go back. Under load it never runs, so the per-order path
// does not pay for it.
func TrimWhenIdle(ctx context.Context, period time.Duration) {
	cycles := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	count := func() uint64 {
		metrics.Read(cycles)
		return cycles[0].Value.Uint64()
	}
	t := time.NewTicker(period)
	defer t.Stop()
	last, trimmed := count(), uint64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := count()
		if n == last && n != trimmed {
			debug.FreeOSMemory()
			debug.FreeOSMemory()
			n = count()
			trimmed = n
		}
		last = n
	}
}
