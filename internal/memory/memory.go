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
	"runtime"
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

// every calls fn every period while the collector runs, until ctx ends. A
// period without a collection stops the ticks until the next collection:
// neither check has anything new to read then (TrimWhenIdle trims once per
// idle stretch, FollowLiveHeap skips a stale figure), and a tick a second
// in every server command woke each idle worker process for nothing, one of
// its few wake-ups (docs/benchmarks.md, "Eight hosts, counted"). An idle
// process still collects every two minutes (the runtime forces it), which
// wakes the checks for one round as before.
func every(ctx context.Context, period time.Duration, fn func()) {
	gcs := collections(ctx)
	cycles := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	count := func() uint64 {
		metrics.Read(cycles)
		return cycles[0].Value.Uint64()
	}
	t := time.NewTimer(period)
	defer t.Stop()
	last := count()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := count()
		fn()
		idle := n == last
		last = count() // fn may collect (the trim does)
		if idle {
			select {
			case <-ctx.Done():
				return
			case <-gcs:
			}
		}
		t.Reset(period)
	}
}

// collections returns a channel that receives after each garbage
// collection until ctx ends (at most one pending). The runtime has no
// notification of a finished collection but a cleanup of unreachable
// memory: each one arms the next on a fresh object, so exactly one is
// armed at a time and the chain ends at the first collection after ctx.
func collections(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	var arm func(int)
	arm = func(int) {
		if ctx.Err() != nil {
			return
		}
		select {
		case ch <- struct{}{}:
		default:
		}
		// 16 bytes with a pointer: not a tiny allocation, which shares
		// its block with others and may never be found unreachable.
		runtime.AddCleanup(&sentinel{}, arm, 0)
	}
	runtime.AddCleanup(&sentinel{}, arm, 0)
	return ch
}

// sentinel is the object whose collection signals a collection.
type sentinel struct {
	_ *byte
	_ [8]byte
}

// FollowLiveHeap raises the soft limit once the collector, held to the
// configured limit, would run back to back: when that limit leaves the
// heap less than an eighth of what is live to grow into before the next
// collection, for sustain checks in a row, each a period apart, with the
// collector running in each, until ctx ends. base returns the configured
// limit (0 or less: none set, or GOMEMLIMIT's, which are left alone).
// Raised, the limit leaves the heap room to double, as GOGC would, and it
// returns to base once base leaves a quarter of the live heap as room.
//
// The room is the limit less the memory that is not heap objects, which
// the runtime counts against it too: stacks, its metadata, and the unused
// part of spans that hold some live objects. That part is not small: when
// JetStream's two-minute deduplication window empties after an async load
// (~13 MiB of message ids in serve), it leaves ~17 MiB of spans a few
// survivors keep, and 48 MiB then left the heap ~20 MiB: with 20 MiB
// live each collection started as the one before ended, in an otherwise
// idle serve, while the live heap stayed under half the limit
// (docs/benchmarks.md, Results, "the room a limit leaves").
// A limit under the live heap does the same: a sustained 3,000 async
// orders/s keep ~50 MiB of message ids in that window, and with the
// default 48 MiB serve spent 0.6 ms of CPU per order instead of 0.2.
//
// A transient peak does not raise it: that peak is what the limit is
// for. An order keeping 10 MiB of output holds ~20 MiB live in serve for
// well under a second (the worker's capture, the live chunks in NATS), and
// raising the limit for it let that order and the next one take serve to
// ~100 MiB instead of ~75 (docs/benchmarks.md, "Memory, 2026-12-02: a peak is not a load").
//
// The limit is never raised past ceiling (0: none), the memory the
// process may take before the kernel ends it (its memory cgroup's limit,
// less a margin): raised past it, a live heap of half of it had the heap
// grow to the whole before each collection, and the OOM killer ended the
// process that the limit, held, would have kept alive at the cost of
// its collector's CPU. A leak the follower followed without bound did so
// at half the memory it would otherwise have reached. At the ceiling the
// runtime collects as the limit asks, as with no follower; a base above
// it is the operator's and kept.
func FollowLiveHeap(ctx context.Context, base func() int64, ceiling int64, period time.Duration, sustain int) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	f := follower{ceiling: ceiling}
	every(ctx, period, func() {
		metrics.Read(samples)
		v := func(i int) int64 { return int64(samples[i].Value.Uint64()) }
		// What the runtime weighs against the limit besides heap
		// objects: mapped and not returned, less free pages and objects.
		heap := heapReading{live: v(0), other: v(2) - v(3) - v(4) - v(5), cycles: samples[1].Value.Uint64()}
		limit := debug.SetMemoryLimit(-1)
		want := f.next(base(), limit, heap, sustain)
		if want != limit {
			debug.SetMemoryLimit(want)
		}
	})
}

// heapReading is what FollowLiveHeap reads at a check.
type heapReading struct {
	live   int64  // the heap live at the last collection
	other  int64  // memory the limit counts that is not heap objects
	cycles uint64 // collections so far
}

// room returns how far the heap can grow past what is live before the
// runtime collects under limit: the runtime's own reckoning, the limit
// less the other memory and a headroom of 3 % (at least 1 MiB).
func (h heapReading) room(limit int64) int64 {
	goal := limit - h.other
	return goal - max(goal*3/100, 1<<20) - h.live
}

// want is the limit that leaves the heap room to double, as GOGC 100
// does with no limit; the headroom covers the runtime's 3 % and the
// other memory moving between checks.
func (h heapReading) want() int64 {
	return 2*h.live + h.other + max((2*h.live+h.other)/16, 4<<20)
}

// follower is FollowLiveHeap's decision, one check at a time.
type follower struct {
	cycles  uint64 // collections completed at the last check
	tight   int    // checks in a row with a collection and base leaving too little room
	ceiling int64  // the highest limit it raises to (0: none)
}

// raised is the limit h wants, at least base and at most the ceiling.
func (f *follower) raised(base int64, h heapReading) int64 {
	want := h.want()
	if f.ceiling > 0 {
		want = min(want, f.ceiling)
	}
	return max(base, want)
}

// next returns the limit to set, given the configured base, the limit in
// effect and the reading. A check with no collection since the one
// before keeps the limit and starts the count again: the live figure is
// stale then (an idle process after a large order still reports that
// order's heap until something collects), and the collector is not
// running back to back.
func (f *follower) next(base, limit int64, h heapReading, sustain int) int64 {
	collected := h.cycles != f.cycles
	f.cycles = h.cycles
	if base <= 0 || !collected {
		f.tight = 0
		return limit
	}
	room := h.room(base)
	if room >= h.live/4 {
		f.tight = 0
		return base
	}
	if room >= h.live/8 {
		// Between the two marks: a raised limit keeps following,
		// base stays, so that the limit does not flap at one mark.
		f.tight = 0
		if limit <= base {
			return base
		}
		return f.raised(base, h)
	}
	f.tight++
	if f.tight < sustain && limit <= base {
		return base
	}
	return f.raised(base, h)
}
