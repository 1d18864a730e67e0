package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestRunningOrderBeatsUntilItEnds: an order that runs for several thirds
// of the ack wait has its heartbeat recorded again at every third, not
// once, and none after it ended.
func TestRunningOrderBeatsUntilItEnds(t *testing.T) {
	e := newEnv(t)
	e.start("beat-1", nil) // AckWait 1s: a beat every 333 ms
	id := e.submit("beat-1", "sleep", "2")
	seen := map[time.Time]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := e.store.GetOrder(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if o.Status.Terminal() {
			if o.Status != order.StatusSucceeded {
				t.Fatalf("order is %s: %s", o.Status, o.Result.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("order did not finish within 30s")
		}
		if p, err := e.store.ProcessOf(t.Context(), id, 1); err != nil {
			t.Fatal(err)
		} else if p != nil {
			seen[p.LastSeen] = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The start's record and at least four beats in 2 s.
	if len(seen) < 4 {
		t.Fatalf("the order's heartbeat was recorded %d different times in 2 s, want at least 4 (one per third of the 1 s ack wait)", len(seen))
	}
	p, err := e.store.ProcessOf(t.Context(), id, 1)
	if err != nil || p == nil {
		return // nothing kept after the end: nothing to beat on
	}
	time.Sleep(time.Second)
	if q, err := e.store.ProcessOf(t.Context(), id, 1); err != nil {
		t.Fatal(err)
	} else if q != nil && !q.LastSeen.Equal(p.LastSeen) {
		t.Fatalf("the order's heartbeat was recorded after it ended: %s, then %s", p.LastSeen, q.LastSeen)
	}
}

// TestShutdownGraceKillsTheRunningOrder: a worker asked to stop lets the
// running order go on for worker.shutdown_grace, then kills it and says
// why in its result.
func TestShutdownGraceKillsTheRunningOrder(t *testing.T) {
	e := newEnv(t)
	stop, _ := runWorker(t, worker.Options{Host: "grace-1", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 500 * time.Millisecond}, e.store, e.q, testenv.Logger(t))
	id := e.submit("grace-1", "sleep", "60")
	e.waitStatus(id, order.StatusRunning)
	began := time.Now()
	stop()
	if d := time.Since(began); d > 15*time.Second {
		t.Fatalf("the worker took %s to stop with a 500ms grace", d.Round(time.Millisecond))
	}
	o, err := e.store.GetOrder(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusKilled || !strings.Contains(o.Result.Error, "worker.shutdown_grace (500ms) passed") {
		t.Fatalf("order is %s with %q, want killed because the shutdown grace passed", o.Status, o.Result.Error)
	}
}
