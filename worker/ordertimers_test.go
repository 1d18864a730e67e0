package worker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestRunningOrderBeatsUntilItEnds: an order that runs for several thirds
// of the ack wait has its heartbeat recorded again at every third, not
// once, and none after it ended. The order runs until four different
// beats are on record (the start's and three more), however long a
// loaded machine takes: counted, not a fixed run of 2 s that a stall
// left with fewer.
func TestRunningOrderBeatsUntilItEnds(t *testing.T) {
	e := newEnv(t)
	e.start("beat-1", nil) // AckWait 1s: a beat every 333 ms
	enough := filepath.Join(t.TempDir(), "enough")
	id := e.submit("beat-1", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.05; done`, "_", enough)
	seen := map[time.Time]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		o, err := e.store.GetOrder(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if o.Status.Terminal() {
			if o.Status != order.StatusSucceeded {
				t.Fatalf("order is %s (%s) with its heartbeat recorded %d different times, want at least 4", o.Status, o.Result.Error, len(seen))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the order's heartbeat was recorded %d different times in a minute, want at least 4 (one per third of the 1 s ack wait)", len(seen))
		}
		if p, err := e.store.ProcessOf(t.Context(), id, 1); err != nil {
			t.Fatal(err)
		} else if p != nil {
			seen[p.LastSeen] = true
		}
		if len(seen) >= 4 {
			if err := os.WriteFile(enough, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
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
	e.waitStarted(id)
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
