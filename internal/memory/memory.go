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
	last, trimmed := count(), uint64(0)
	every(ctx, period, func() {
		n := count()
		if n == last && n != trimmed {
			debug.FreeOSMemory()
			debug.FreeOSMemory()
			n = count()
			trimmed = n
		}
		last = n
	})
}

// every calls fn every period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// liveSlack is what FollowLiveHeap leaves above twice the live heap: the
// runtime's own memory (stacks, metadata) counts against the limit too.
const liveSlack = 16 << 20

// FollowLiveHeap raises the soft limit to twice the heap that was live at
// the last collection (plus liveSlack) while that heap is above half the
// limit, checking every period until ctx ends; base
// returns the configured limit (0 or less: none set, or GOMEMLIMIT's,
// which are left alone). A limit under the live heap makes the collector
// run back to back: a sustained 3,000 async orders/s keep ~50 MiB of
// message ids in JetStream's two-minute deduplication window alone, and
// with the default 48 MiB serve spent 0.6 ms of CPU per order instead of
// 0.2 and its rate fell by 40 % (docs/benchmarks.md, "Memory"). Raised to
// twice the live heap, the limit leaves the pace to GOGC, as without one;
// it returns to base once the live heap shrinks, and keeps capping the
// transient peaks (a large output) it is there for.
func FollowLiveHeap(ctx context.Context, base func() int64, period time.Duration) {
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	every(ctx, period, func() {
		b := base()
		if b <= 0 {
			return
		}
		metrics.Read(live)
		want := b
		if l := int64(live[0].Value.Uint64()); l > b/2 {
			want = max(b, 2*l+liveSlack)
		}
		if debug.SetMemoryLimit(-1) != want {
			debug.SetMemoryLimit(want)
		}
	})
}
