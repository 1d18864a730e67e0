package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
// every order read the state and the last renewal's age first (fresh).
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
	// renewed is when the lease's last write the server took was sent
	// (queue.Lease.Written), and ttl the lease as last read from the
	// bucket, both in nanoseconds, renewed on monoBase's monotonic
	// clock: dispatchable's bound.
	renewed, ttl atomic.Int64

	mu      sync.Mutex
	changed chan struct{} // closed at the next change of state
	lost    error         // why, once lost
	// doubts counts the heartbeat's findings of a lapse (doubt), which
	// it makes beside the renewals: a renewal's verdict settles only
	// those made before it was sent (settled).
	doubts uint64
}

func newHold(feed context.Context, logger *slog.Logger, written time.Time, ttl time.Duration) *hold {
	h := &hold{feed: feed, logger: logger, changed: make(chan struct{})}
	h.renewal(written)
	h.ttl.Store(int64(ttl))
	return h
}

// monoBase is the origin of hold.renewed: durations since it are read on
// the monotonic clock, which runs on while the process is stopped.
var monoBase = time.Now()

// renewal records that the lease's write sent at was taken by the server,
// and wakes the claims and starts that wait for a renewal (wait).
func (h *hold) renewal(at time.Time) {
	h.renewed.Store(int64(at.Sub(monoBase)))
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.changed)
	h.changed = make(chan struct{})
}

// leaseAge is how long ago the lease's last write the server took was
// sent.
func (h *hold) leaseAge() time.Duration {
	if h == nil {
		return 0
	}
	return time.Since(monoBase) - time.Duration(h.renewed.Load())
}

// dispatchable returns nil when what the worker does next, at once,
// happens while the lease is certainly still its own: held, and its last
// write sent less than half the lease ago (the server keeps it a whole
// lease from a moment after that, so the step has the other half). It is
// the bound for what nothing else fences, an action's systemd job: a
// worker stopped (SIGSTOP, a stalled machine) after its check in
// PostgreSQL and woken past its lease finds its last renewal old by this
// clock, whichever of its goroutines runs first. Between half the lease
// and the lease it waits for the next renewal, and says waited; past the
// lease, or once the lease is lost, it refuses: the host may be another
// worker's by now.
func (h *hold) dispatchable(ctx context.Context) (waited bool, err error) {
	if h == nil {
		return false, nil
	}
	for {
		if h.state.Load() == leaseLost {
			return waited, errNotHeld
		}
		if h.fresh() { // the bound a claim and a start keep too
			return waited, nil
		}
		ttl, age := time.Duration(h.ttl.Load()), h.leaseAge()
		if age >= ttl {
			return waited, fmt.Errorf("%w: its last renewal was sent %s ago, past the lease (%s)", errNotHeld, age.Round(time.Millisecond), ttl)
		}
		waited = true
		select {
		case <-ctx.Done():
			return waited, ctx.Err()
		case <-time.After(dispatchPoll):
		}
	}
}

// dispatchPoll is how often dispatchable looks for a renewal while it
// waits for one (rare: a renewal late by a sixth of the lease).
const dispatchPoll = 10 * time.Millisecond

// set moves the hold to state s (leaseHeld or leaseLapsed); a lost hold
// stays lost.
func (h *hold) set(s int32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setLocked(s)
}

// doubt moves the hold to leaseLapsed for a lapse the heartbeat found,
// until the verdict of a renewal sent after it (settled).
func (h *hold) doubt() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.doubts++
	h.setLocked(leaseLapsed)
}

// doubted is how many lapses the heartbeat has found so far: read before
// a renewal is sent, and handed to settled with its verdict.
func (h *hold) doubted() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.doubts
}

// settled moves the hold to leaseHeld after a renewal that the server
// took, sent when the heartbeat had found before lapses: one it found
// since may have read the key after the renewal landed, and its own
// renewal, asked for at once, gives the verdict.
func (h *hold) settled(before uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.doubts == before {
		h.setLocked(leaseHeld)
	}
}

// setLocked is set, with h.mu held.
func (h *hold) setLocked(s int32) {
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

// fresh reports whether a claim or a start may go ahead at once: the
// lease held, and its last write the server took sent less than half the
// lease ago, as dispatchable has it for an action's job. Two atomic loads
// and a clock read per order.
//
// The state alone said held for as long as no renewal found the key gone
// or another's: renewals that failed without an answer (a NATS cluster
// electing a leader, a partition) left it so past the lease, while the
// server expired the key and a standby took it. The worker claimed on,
// fenced in PostgreSQL by nobody yet; the standby's fence came a moment
// later and interrupted the order the holder had claimed and then, its
// renewal finding the key taken, never started: an order lost, having
// never run (TestFaultsNATSClusterNodeFrozen in CI, docs/decisions.md
// "Claims and starts wait for a renewal…").
func (h *hold) fresh() bool {
	if h == nil {
		return true
	}
	if h.state.Load() != leaseHeld {
		return false
	}
	ttl := time.Duration(h.ttl.Load())
	return ttl <= 0 || h.leaseAge() < ttl/2
}

// stale reports whether a claim or a start would wait for a renewal now:
// the lease neither fresh nor lost (its last renewal older than half the
// lease, or a lapse being settled).
func (h *hold) stale() bool {
	return !h.fresh() && h.state.Load() != leaseLost
}

// wait returns nil once the lease is held and fresh: at once while it
// is, after the next renewal while the last one is older than half the
// lease, after the renewal's verdict while a lapse is being settled. A lost lease,
// or the tenure's feed ending first, answers errNotHeld; ctx ending, its
// error. what (the order's "claim" or "start") and id name the step
// that waits, in the line that says so.
func (h *hold) wait(ctx context.Context, what string, id uuid.UUID) error {
	if h.fresh() {
		return nil
	}
	for logged := false; ; logged = true {
		h.mu.Lock()
		s, changed, lost := h.state.Load(), h.changed, h.lost
		h.mu.Unlock()
		// Read after changed: a renewal from here on closes it.
		switch {
		case s == leaseLost:
			return fmt.Errorf("%w: %w", errNotHeld, lost)
		case h.fresh():
			return nil
		}
		switch {
		case logged:
		case s == leaseHeld:
			h.logger.Info("the host lease's last renewal is older than half the lease: the order's "+what+" waits for the next one",
				"order_id", id, "renewal_sent_ago", h.leaseAge().Round(time.Millisecond), "lease", time.Duration(h.ttl.Load()))
		default:
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
