package memory

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// trim runs TrimWhenIdle until the test ends, and waits for it to return:
// a trim still running would count in the next test.
func trim(t *testing.T, period time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); TrimWhenIdle(ctx, period) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestSetLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	none := func(string) string { return "" }
	if got := SetLimit(50<<20, none); got != 50<<20 || debug.SetMemoryLimit(-1) != 50<<20 {
		t.Fatalf("SetLimit(50 MiB) = %d, runtime limit %d", got, debug.SetMemoryLimit(-1))
	}
	if got := SetLimit(0, none); got != noLimit || debug.SetMemoryLimit(-1) != noLimit {
		t.Fatalf("SetLimit(0) = %d, runtime limit %d; want no limit", got, debug.SetMemoryLimit(-1))
	}
	// GOMEMLIMIT wins: the runtime applied it at start, and it stays.
	debug.SetMemoryLimit(70 << 20)
	env := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "70MiB"
		}
		return ""
	}
	if got := SetLimit(50<<20, env); got != 70<<20 || debug.SetMemoryLimit(-1) != 70<<20 {
		t.Fatalf("with GOMEMLIMIT: SetLimit = %d, runtime limit %d; want 70 MiB kept", got, debug.SetMemoryLimit(-1))
	}
}

// An idle process gives back what a burst left: 64 MiB that were live at
// the last collection are garbage now, and nothing else would collect them
// for two minutes.
func TestTrimWhenIdleReturnsFreedMemory(t *testing.T) {
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	runtime.GC()
	runtime.KeepAlive(buf)
	buf = nil
	released := read("/memory/classes/heap/released:bytes")

	trim(t, 50*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for read("/memory/classes/heap/released:bytes") < released+48<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("released heap %d MiB → %d MiB in 10 s; want the 64 MiB of garbage back",
				released>>20, read("/memory/classes/heap/released:bytes")>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Under load the trim never runs (the collector runs on its own every
// period), and once idle it runs once, not once per period.
func TestTrimWhenIdleRunsOncePerIdleStretch(t *testing.T) {
	// Long enough that a busy process completes a collection in every
	// period even when a loaded machine leaves it without a CPU for a
	// while: at a load average of 50, 250 ms was not (one forced
	// collection in one run of the package). The period is the
	// scenario's, not what is measured: a trim that ran while busy would
	// run in every period of the window.
	const period = time.Second
	busy, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var keep []byte
		for {
			select {
			case <-busy:
				runtime.KeepAlive(keep)
				return
			default:
				keep = make([]byte, 1<<20)
			}
		}
	}()
	forced := read("/gc/cycles/forced:gc-cycles")
	trim(t, period)
	time.Sleep(10 * period) // an observation window: nothing may happen in it
	if n := read("/gc/cycles/forced:gc-cycles"); n != forced {
		t.Fatalf("%d forced collections while the process was busy; want none", n-forced)
	}
	close(busy)
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for read("/gc/cycles/forced:gc-cycles") < forced+2 {
		if time.Now().After(deadline) {
			t.Fatal("no trim within 10 s of going idle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	trimmed := read("/gc/cycles/forced:gc-cycles")
	time.Sleep(10 * period) // an observation window: idle, already trimmed
	if n := read("/gc/cycles/forced:gc-cycles"); n != trimmed {
		t.Fatalf("%d more forced collections while idle after the trim; want one trim per idle stretch", n-trimmed)
	}
}

// A live heap above the limit for a while raises it to twice that (the
// collector would otherwise run back to back), and the limit returns to
// its base once the heap shrinks.
func TestFollowLiveHeap(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	const base = 32 << 20
	debug.SetMemoryLimit(base)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowLiveHeap(ctx, func() int64 { return base }, 0, 100*time.Millisecond, 3)
	}()
	defer func() { cancel(); <-done }()

	until := func(what string, ok func(int64) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(debug.SetMemoryLimit(-1)) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the limit is %d MiB", what, debug.SetMemoryLimit(-1)>>20)
			}
			runtime.GC() // the collector runs in every check, as under load
			time.Sleep(10 * time.Millisecond)
		}
	}
	keep := make([]byte, 64<<20)
	for i := 0; i < len(keep); i += 4096 {
		keep[i] = 1
	}
	until("64 MiB live", func(l int64) bool { return l >= 128<<20 })
	runtime.KeepAlive(keep)
	keep = nil
	until("the 64 MiB freed", func(l int64) bool { return l == base })
}

// The decision, check by check, with 16 MiB of memory besides the heap
// objects under a base of 48 MiB (room for the heap: 31 MiB, less what is
// live): a transient peak (a large order) leaves the limit alone; a heap
// that leaves too little room, with the collector running, raises it; a
// check without a collection reads a stale figure and neither raises nor
// lowers; other memory that leaves a heap under half the limit no room
// raises it too.
func TestFollowerRaisesOnlyForASustainedHeap(t *testing.T) {
	const base, sustain = 48 << 20, 3
	const MiB = 1 << 20
	var f follower
	limit, cycles, other := int64(base), uint64(10), int64(16*MiB)
	check := func(live int64, collected bool) int64 {
		t.Helper()
		if collected {
			cycles++
		}
		limit = f.next(base, limit, heapReading{live: live, other: other, cycles: cycles}, sustain)
		return limit
	}
	check(10*MiB, true)
	// A large order: two checks with 32 MiB live, then it is garbage.
	for i := 0; i < sustain-1; i++ {
		if l := check(32*MiB, true); l != base {
			t.Fatalf("check %d of a transient 32 MiB: limit %d MiB, want the base", i+1, l/MiB)
		}
	}
	if l := check(12*MiB, true); l != base {
		t.Fatalf("after the transient: limit %d MiB", l/MiB)
	}
	// Idle after a large order: the figure stays high with no collection;
	// it never counts towards a raise.
	for i := 0; i < 3*sustain; i++ {
		if l := check(32*MiB, i%2 == 0 && i < 2); l != base {
			t.Fatalf("stale checks: limit %d MiB at %d", l/MiB, i)
		}
	}
	// A sustained live heap: raised at the sustain-th check in a row, to
	// twice the heap, the other memory and a sixteenth of both.
	check(12*MiB, true)
	for i := 1; i < sustain; i++ {
		if l := check(40*MiB, true); l != base {
			t.Fatalf("check %d of a sustained 40 MiB: limit %d MiB, want the base until %d", i, l/MiB, sustain)
		}
	}
	if l, want := check(40*MiB, true), int64(80+16+6)*MiB; l != want {
		t.Fatalf("check %d of a sustained 40 MiB: limit %.1f MiB, want %d", sustain, float64(l)/MiB, want/MiB)
	}
	// Raised, it follows the heap at every collection, keeps its value
	// without one, keeps following while base would leave the heap less
	// than a quarter of it as room, and returns to base after.
	if l, want := check(60*MiB, true), int64(120+16)*MiB+136*MiB/16; l != want {
		t.Fatalf("following: limit %.1f MiB, want %.1f", float64(l)/MiB, float64(want)/MiB)
	}
	if l, want := check(10*MiB, false), int64(120+16)*MiB+136*MiB/16; l != want {
		t.Fatalf("no collection: limit %.1f MiB, want it kept", float64(l)/MiB)
	}
	if l, want := check(26*MiB, true), int64(52+16)*MiB+68*MiB/16; l != want {
		t.Fatalf("26 MiB live, 5 MiB of room at base: limit %.1f MiB, want %.1f (still following)", float64(l)/MiB, float64(want)/MiB)
	}
	if l := check(24*MiB, true); l != base {
		t.Fatalf("24 MiB live, 7 MiB of room at base: limit %d MiB, want the base", l/MiB)
	}
	if l := check(26*MiB, true); l != base {
		t.Fatalf("26 MiB live again, at base: limit %d MiB, want the base (it is not short of room)", l/MiB)
	}
	// 30 MiB besides the heap (a heap that shrank leaves its spans
	// partly used): 20 MiB live, under half of base, has no room left.
	other = 30 * MiB
	for i := 1; i < sustain; i++ {
		if l := check(20*MiB, true); l != base {
			t.Fatalf("check %d of 20 MiB live with 30 MiB besides: limit %d MiB, want the base until %d", i, l/MiB, sustain)
		}
	}
	if l, want := check(20*MiB, true), int64(40+30)*MiB+70*MiB/16; l != want {
		t.Fatalf("20 MiB live with 30 MiB besides: limit %.1f MiB, want %.1f", float64(l)/MiB, float64(want)/MiB)
	}
	// No configured limit (or GOMEMLIMIT's): never touched.
	var g follower
	if l := g.next(0, 1<<62, heapReading{live: 100 * MiB, cycles: 5}, sustain); l != 1<<62 {
		t.Fatalf("no base: limit %d, want it untouched", l)
	}
}

// An idle process is not woken every period: the checks stop at the
// first period without a collection and start again at the next one.
// Counted, not timed: ticking every period, fn ran about forty times in
// the window below; parked, it runs at most once or twice (one round
// after a collection the test itself may have caused).
func TestEveryParksWhileNoCollection(t *testing.T) {
	const period = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{}, 1000)
	done := make(chan struct{})
	go func() { defer close(done); every(ctx, period, func() { calls <- struct{}{} }) }()
	defer func() { cancel(); <-done }()

	runtime.GC()
	time.Sleep(40 * period) // an observation window: idle
	before := len(calls)
	time.Sleep(40 * period)
	if n := len(calls) - before; n > 3 {
		t.Fatalf("%d checks in 40 idle periods; want the checks parked until the next collection", n)
	}
	// A collection wakes them again.
	before = len(calls)
	runtime.GC()
	deadline := time.Now().Add(10 * time.Second)
	for len(calls) == before {
		if time.Now().After(deadline) {
			t.Fatal("no check within 10 s of a collection; want the checks woken by it")
		}
		runtime.Gosched()
		time.Sleep(period)
	}
}
