package worker_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestIdempotentOrderHandedBackIsStillRequeuedOnce: a hand-back counts
// an attempt (the next claim raises it) though nothing ran. The
// successor of a worker that died running an idempotent order requeued
// it only at attempt 1, so one handed back first (a stop, a lost lease,
// a late renewal at its start: hA27's hand-back, at every late renewal)
// was interrupted at its first loss, never run again, as a
// non-idempotent order is. It is requeued once, whatever its attempt;
// its second loss interrupts it.
func TestIdempotentOrderHandedBackIsStillRequeuedOnce(t *testing.T) {
	e := newEnv(t)
	const host = "idem-handback"
	f := filepath.Join(t.TempDir(), "count")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "sh",
		Args: []string{"-c", `echo x >> "$1"`, "_", f}, Idempotent: true,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
		t.Fatal(err)
	}
	ran := func() string { b, _ := os.ReadFile(f); return string(b) }

	// Claimed, then handed back unstarted by a stop.
	stopped, _ := runToStop(e, host, func(db *postgres.Store, stop func()) (worker.Store, *atomic.Bool) {
		s := &claimLostAtStop{Store: db, stop: stop}
		return s, &s.once
	})
	if !stopped.Load() {
		t.Fatal("no claim happened: nothing was tested")
	}
	if got, err := e.store.GetOrder(t.Context(), o.ID); err != nil || got.Status != order.StatusQueued || got.Attempt != 1 || ran() != "" {
		t.Fatalf("after the stop: %+v %v, ran %q; want handed back (queued, attempt 1), never run", got, err, ran())
	}

	// Its next attempt's worker dies after the run, before the result.
	crashOn := func(attempt int) func(string, *order.Order) error {
		return func(p string, got *order.Order) error {
			if p == "after_exec" && got.ID == o.ID && got.Attempt == attempt {
				return errCrash
			}
			return nil
		}
	}
	if _, done := e.start(host, crashOn(2)); !errors.Is(<-done, errCrash) {
		t.Fatal("the second attempt's worker did not die as injected")
	}
	// The successor requeues it (it never was) and runs it, in attempt
	// 3; and dies again the same way.
	_, done := e.start(host, crashOn(3))
	var err error
	testenv.WaitUntil(t, 30*time.Second, "the third attempt's worker dies, or the order ends", func() bool {
		select {
		case err = <-done:
			return true
		default:
		}
		got, gerr := e.store.GetOrder(t.Context(), o.ID)
		return gerr == nil && got.Status.Terminal()
	})
	if !errors.Is(err, errCrash) {
		got, gerr := e.store.GetOrder(t.Context(), o.ID)
		t.Fatalf("the idempotent order, handed back once and lost once: %s at attempt %d (%v), ran %q, its worker %v; want requeued and run again",
			got.Status, got.Attempt, gerr, ran(), err)
	}
	if got := ran(); got != "x\nx\n" {
		t.Fatalf("ran %q: want the lost attempt and the requeued one", got)
	}
	// Requeued once: its second loss interrupts it.
	e.start(host, nil)
	got := e.waitStatus(o.ID, order.StatusInterrupted)
	if got.Attempt != 3 || ran() != "x\nx\n" {
		t.Fatalf("after the second loss: attempt %d, ran %q; want interrupted at attempt 3, run twice", got.Attempt, ran())
	}
}
