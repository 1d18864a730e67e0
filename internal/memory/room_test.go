package memory

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// fragment leaves about n bytes of spans that hold one small live object
// each, and returns those objects: what a map of many small entries
// leaves when most of them go (JetStream's deduplication window emptying
// after an async load). The runtime counts those spans' unused part
// against the memory limit, as it does stacks and its own metadata.
func fragment(n int) []*[512]byte {
	const perSpan = 16 // 512-byte objects in one 8 KiB span
	all := make([]*[512]byte, n/512)
	for i := range all {
		all[i] = new([512]byte)
	}
	keep := make([]*[512]byte, 0, len(all)/perSpan)
	for i := 0; i < len(all); i += perSpan {
		keep = append(keep, all[i])
	}
	return keep
}

// An idle process whose live heap stays under half the limit, but whose
// other memory leaves that heap no room under it: the collector must not
// run back to back for as long as that lasts. Counted, not timed: over a
// stretch in which the process allocates four times its live heap, GOGC
// collects about four times; pinned at the live heap, the collector ran
// after every few KiB, thousands of times.
func TestFollowLiveHeapGivesRoomWhenOtherMemoryFillsTheLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	debug.SetMemoryLimit(-1)
	sparse := fragment(24 << 20)
	live := make([]byte, 16<<20)
	for i := 0; i < len(live); i += 4096 {
		live[i] = 1
	}
	runtime.GC()
	runtime.GC()
	held := int64(read("/gc/heap/live:bytes"))
	// Twice the live heap and a little: never raised by a rule that
	// waits for the live heap to pass half the limit.
	base := 2*held + 2<<20
	debug.SetMemoryLimit(base)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowLiveHeap(ctx, func() int64 { return base }, 0, 10*time.Millisecond, 3)
	}()
	defer func() { cancel(); <-done }()

	// Paced as an idle serve's few jobs are, not flat out: what a
	// process allocates while a collection marks counts as live in it.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var garbage []byte
	allocate := func(n int64) {
		for a := int64(0); a < n; a += 64 << 10 {
			<-tick.C
			garbage = make([]byte, 64<<10)
		}
	}
	// The checks run a period apart: give them a few.
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) == base && time.Now().Before(deadline) {
		allocate(1 << 20)
	}
	automatic := read("/gc/cycles/automatic:gc-cycles")
	allocate(4 * held)
	n := read("/gc/cycles/automatic:gc-cycles") - automatic
	if n > 12 {
		t.Errorf("%d collections while allocating %d MiB with %d MiB live and the limit at %d MiB (base %d MiB); want about 4 (GOGC)",
			n, 4*held>>20, held>>20, debug.SetMemoryLimit(-1)>>20, base>>20)
	}
	runtime.KeepAlive(sparse)
	runtime.KeepAlive(live)
	runtime.KeepAlive(garbage)
}
