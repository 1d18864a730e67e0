package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
)

// errNotHeld refuses a claim or a start: the tenure's lease is lost, or
// the tenure ended while a lapse of it was being settled. The order is
// left to the host's next owner (this worker's next tenure included).
var errNotHeld = errors.New("the host lease is not held")

// The states of a tenure's hold on the host's lease.
const (
	leaseHeld   int32 = iota
	leaseLapsed       // found gone or not this worker's: until a renewal says which
	leaseLost         // another worker took it: final for the tenure
)

// hold is what the claiming goroutine knows of the tenure's lease. The
// heartbeat goroutine (beat) finds a lapse; the claim and the start of
// every order read the state first, one atomic load while it is held.
//
// A lapse was acted on only through the feed's end (stopFeed): an order
// already delivered, or the next one taken on a lapse's heels, was still
// claimed and started. After a 2.7 s machine stall a worker whose renewal
// had just found its lease taken claimed and started an order 36 ms later;
// the fence held (its successor had not fenced yet) and the successor
// interrupted it, but the order ran on a worker that no longer owned its
// host (docs/decisions.md, "A lapsed lease stops claims at once").
type hold struct {
	state  atomic.Int32
	feed   context.Context // the tenure's feed: its end ends a wait
	logger *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed at the next change of state
	lost    error         // why, once lost
}

func newHold(feed context.Context, logger *slog.Logger) *hold {
	return &hold{feed: feed, logger: logger, changed: make(chan struct{})}
}

// set moves the hold to state s (leaseHeld or leaseLapsed); a lost hold
// stays lost.
func (h *hold) set(s int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.state.Load(); cur == leaseLost || cur == s {
		return
	}
	h.state.Store(s)
	close(h.changed)
	h.changed = make(chan struct{})
}

// lose marks the lease lost, for good in this tenure.
func (h *hold) lose(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state.Load() == leaseLost {
		return
	}
	h.lost = err
	h.state.Store(leaseLost)
	close(h.changed)
	h.changed = make(chan struct{})
}

// held reports whether the lease is held now, without waiting.
func (h *hold) held() bool { return h == nil || h.state.Load() == leaseHeld }

// wait returns nil once the lease is held: at once while it is, after
// the renewal's verdict while a lapse is being settled. A lost lease,
// or the tenure's feed ending first, answers errNotHeld; ctx ending, its
// error. what (the order's "claim" or "start") and id name the step
// that waits, in the line that says so.
func (h *hold) wait(ctx context.Context, what string, id uuid.UUID) error {
	if h.held() {
		return nil
	}
	for logged := false; ; logged = true {
		h.mu.Lock()
		s, changed, lost := h.state.Load(), h.changed, h.lost
		h.mu.Unlock()
		switch s {
		case leaseHeld:
			return nil
		case leaseLost:
			return fmt.Errorf("%w: %w", errNotHeld, lost)
		}
		if !logged {
			h.logger.Info("the host lease is in doubt: the order's "+what+" waits for its renewal's verdict", "order_id", id)
		}
		select {
		case <-changed:
		case <-h.feed.Done():
			return fmt.Errorf("%w: the tenure ended while a lapse was settled: %w", errNotHeld, context.Cause(h.feed))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
