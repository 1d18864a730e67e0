package api

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestAwaitFinishAllocations: a wait ended by its order's finished event.
// With a deadline timer and a poll ticker it took 6 allocations (3 a
// timer); one timer, re-armed for the next poll or the deadline, takes 3;
// one kept from an earlier wait (waitTimers), none.
func TestAwaitFinishAllocations(t *testing.T) {
	var s Server
	id := uuid.New()
	done := &order.Order{ID: id, Status: order.StatusSucceeded}
	read := func(context.Context, uuid.UUID) (*order.Order, error) { return done, nil }
	events := make(chan queue.Event, 1)
	ctx := context.Background()
	n := testing.AllocsPerRun(200, func() {
		events <- queue.Event{OrderID: id, Status: "succeeded"}
		if o, _ := s.awaitFinish(ctx, id, events, 10*time.Second, read, nil); o != done {
			t.Fatalf("got %+v", o)
		}
	})
	if n > 0 {
		t.Fatalf("%.0f allocations to wait for a finished event, want none", n)
	}
}

// TestAwaitFinishPollsAndExpires: without events, a wait reads the order
// once a second until it is finished, and at the deadline answers the
// order as it then is; a canceled request ends it with nothing.
func TestAwaitFinishPollsAndExpires(t *testing.T) {
	var s Server
	id := uuid.New()
	var reads atomic.Int32
	read := func(status order.Status, after int32) readOrder {
		return func(context.Context, uuid.UUID) (*order.Order, error) {
			if reads.Add(1) >= after {
				return &order.Order{ID: id, Status: status}, nil
			}
			return &order.Order{ID: id, Status: order.StatusRunning}, nil
		}
	}
	// Finished at the second poll, within the wait.
	if o, _ := s.awaitFinish(t.Context(), id, nil, 30*time.Second, read(order.StatusSucceeded, 2), nil); o == nil || o.Status != order.StatusSucceeded || reads.Load() != 2 {
		t.Fatalf("polled: %+v after %d reads, want succeeded after 2", o, reads.Load())
	}
	// Still running at the deadline: answered as it is, read once.
	reads.Store(0)
	if o, _ := s.awaitFinish(t.Context(), id, nil, 300*time.Millisecond, read(order.StatusSucceeded, 100), nil); o == nil || o.Status != order.StatusRunning || reads.Load() != 1 {
		t.Fatalf("expired: %+v after %d reads, want running after 1", o, reads.Load())
	}
	// A started event does not end the wait; the finished one does.
	reads.Store(0)
	events := make(chan queue.Event, 2)
	events <- queue.Event{OrderID: id, Status: "running"}
	events <- queue.Event{OrderID: id, Status: "failed"}
	if o, _ := s.awaitFinish(t.Context(), id, events, 30*time.Second, read(order.StatusFailed, 1), nil); o == nil || o.Status != order.StatusFailed || reads.Load() != 1 {
		t.Fatalf("events: %+v after %d reads, want failed after 1", o, reads.Load())
	}
	// The client went away.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if o, _ := s.awaitFinish(ctx, id, nil, 30*time.Second, read(order.StatusSucceeded, 100), nil); o != nil {
		t.Fatalf("canceled: %+v, want nothing", o)
	}
}

// TestAwaitFinishOutlastsAFailedRead: a read that fails within the wait
// (PostgreSQL restarting) is tried again at the next poll; it ended the
// wait with nothing, and the compat surfaces then took the order for one
// that outlived its wait: canceled it, running, and answered it timed
// out. At the deadline a failed read still ends it with nothing.
func TestAwaitFinishOutlastsAFailedRead(t *testing.T) {
	var s Server
	id := uuid.New()
	var reads atomic.Int32
	read := func(context.Context, uuid.UUID) (*order.Order, error) {
		if reads.Add(1) == 1 {
			return nil, errors.New("failed to connect: connection refused")
		}
		return &order.Order{ID: id, Status: order.StatusSucceeded}, nil
	}
	events := make(chan queue.Event, 1)
	events <- queue.Event{OrderID: id, Status: "succeeded"}
	if o, _ := s.awaitFinish(t.Context(), id, events, 30*time.Second, read, nil); o == nil || o.Status != order.StatusSucceeded || reads.Load() != 2 {
		t.Fatalf("got %+v after %d reads, want succeeded after 2 (the first failed)", o, reads.Load())
	}
	failing := func(context.Context, uuid.UUID) (*order.Order, error) { return nil, errors.New("connection refused") }
	if o, _ := s.awaitFinish(t.Context(), id, nil, 300*time.Millisecond, failing, nil); o != nil {
		t.Fatalf("a read failing up to the deadline: %+v, want nothing", o)
	}
}
