package memory

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// A leak: the live heap grows and never shrinks. The follower raises the
// limit with it (twice the live heap and the other memory), and nothing
// stopped it: a process whose memory cgroup allows 96 MiB had its soft
// limit raised past that once 48 MiB were live, the heap let grow to
// the cgroup's limit before each collection, where the kernel ends the
// process. It stops at the ceiling; below it, it follows as before.
func TestFollowLiveHeapStopsAtTheCeiling(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	const MiB = 1 << 20
	runtime.GC()
	base, ceiling := int64(32*MiB), int64(96*MiB)
	debug.SetMemoryLimit(base)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowLiveHeap(ctx, func() int64 { return base }, ceiling, 10*time.Millisecond, 2)
	}()
	defer func() { cancel(); <-done }()

	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var (
		leak    [][]byte
		garbage []byte
		top     int64
	)
	// 4 MiB more live at each step, to 72 MiB: twice that is past the
	// ceiling, the live heap itself is not.
	for len(leak) < 18 {
		b := make([]byte, 4*MiB)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		leak = append(leak, b)
		// Garbage at an idle process's pace, for the collector to run
		// and the checks (a period apart) to see it.
		for a := 0; a < 8*MiB; a += 64 << 10 {
			<-tick.C
			garbage = make([]byte, 64<<10)
			top = max(top, debug.SetMemoryLimit(-1))
		}
	}
	if top <= base {
		t.Fatalf("the limit never rose above its base (%d MiB) with %d MiB leaked: nothing was tested", base/MiB, 4*len(leak))
	}
	if top > ceiling {
		t.Errorf("the limit rose to %d MiB with %d MiB leaked, past the ceiling of %d MiB", top/MiB, 4*len(leak), ceiling/MiB)
	}
	runtime.KeepAlive(leak)
	runtime.KeepAlive(garbage)
}
