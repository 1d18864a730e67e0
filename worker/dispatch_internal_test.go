package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestDispatchableBoundsAJobByTheLastRenewal: an action's job is queued
// at once while the lease's last renewal was sent less than half a lease
// ago; between half and a whole lease the dispatch waits for the next
// renewal (and says it waited: the fence checks PostgreSQL again);
// past the lease, or with the lease lost, it is refused. The ages are
// set on the hold, not waited for: a worker stopped past its lease wakes
// with its last renewal that old.
func TestDispatchableBoundsAJobByTheLastRenewal(t *testing.T) {
	const ttl = time.Hour // no age below moves past a bound while the test runs
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newAt := func(age time.Duration) *hold {
		return newHold(t.Context(), logger, time.Now().Add(-age), ttl)
	}

	if waited, err := newAt(0).dispatchable(t.Context()); err != nil || waited {
		t.Errorf("renewed just now: waited %v, %v; want at once", waited, err)
	}
	if waited, err := newAt(ttl/2 - time.Minute).dispatchable(t.Context()); err != nil || waited {
		t.Errorf("renewed just under half the lease ago: waited %v, %v; want at once", waited, err)
	}

	// Past the lease: refused, whatever the hold's state says (a stopped
	// worker's renewals stopped with it; its hold still says held).
	h := newAt(ttl + time.Second)
	if _, err := h.dispatchable(t.Context()); !errors.Is(err, errNotHeld) {
		t.Errorf("renewed more than a lease ago: %v, want errNotHeld", err)
	}

	// Lost: refused, however fresh its last renewal.
	h = newAt(0)
	h.lose(errors.New("taken"))
	if _, err := h.dispatchable(t.Context()); !errors.Is(err, errNotHeld) {
		t.Errorf("lease lost: %v, want errNotHeld", err)
	}

	// Between half and a whole lease: waits for the next renewal.
	h = newAt(ttl/2 + time.Minute)
	type answer struct {
		waited bool
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		waited, err := h.dispatchable(t.Context())
		got <- answer{waited, err}
	}()
	select {
	case a := <-got:
		t.Fatalf("renewed more than half the lease ago: answered at once (waited %v, %v), want a wait for the renewal", a.waited, a.err)
	case <-time.After(20 * dispatchPoll):
	}
	h.renewal(time.Now())
	if a := <-got; a.err != nil || !a.waited {
		t.Errorf("after the renewal: waited %v, %v; want waited, nil", a.waited, a.err)
	}

	// The wait ends with its context.
	h = newAt(ttl/2 + time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.dispatchable(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("a wait whose context ended: %v", err)
	}

	// A lapse being settled (the renewal found the key gone) waits too,
	// however fresh the renewal.
	h = newAt(0)
	h.set(leaseLapsed)
	ctx, cancel = context.WithTimeout(t.Context(), 20*dispatchPoll)
	defer cancel()
	if waited, err := h.dispatchable(ctx); !errors.Is(err, context.DeadlineExceeded) || !waited {
		t.Errorf("lapsed: waited %v, %v; want a wait", waited, err)
	}
}

// TestClaimsAndStartsWaitForARenewalPastHalfTheLease: an order's claim
// or start goes ahead at once while the lease's last renewal was sent
// less than half a lease ago; older, it waits for the next renewal,
// whatever the state says (renewals that fail without an answer leave
// it held), and a lease lost meanwhile refuses it. Without the wait a
// holder whose renewals had gone unanswered past the lease claimed an
// order the standby, which had taken the expired key, interrupted before
// it ever started (CI, TestFaultsNATSClusterNodeFrozen).
func TestClaimsAndStartsWaitForARenewalPastHalfTheLease(t *testing.T) {
	const ttl = time.Hour // no age below moves past a bound while the test runs
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newAt := func(age time.Duration) *hold {
		return newHold(t.Context(), logger, time.Now().Add(-age), ttl)
	}
	waitFor := func(h *hold) <-chan error {
		got := make(chan error, 1)
		go func() { got <- h.wait(t.Context(), "claim", uuid.Nil) }()
		return got
	}
	waits := func(what string, got <-chan error) {
		t.Helper()
		select {
		case err := <-got:
			t.Fatalf("%s: answered at once (%v), want a wait for the next renewal", what, err)
		case <-time.After(20 * dispatchPoll):
		}
	}

	if err := newAt(ttl/2-time.Minute).wait(t.Context(), "claim", uuid.Nil); err != nil {
		t.Errorf("renewed just under half the lease ago: %v, want at once", err)
	}

	for _, age := range []time.Duration{ttl/2 + time.Minute, ttl + time.Minute} {
		h := newAt(age)
		got := waitFor(h)
		waits(fmt.Sprintf("held, renewed %s ago", age), got)
		h.renewal(time.Now())
		if err := <-got; err != nil {
			t.Errorf("renewed %s ago, then renewed: %v, want nil", age, err)
		}
	}

	h := newAt(ttl/2 + time.Minute)
	got := waitFor(h)
	waits("held, renewed past half the lease ago", got)
	h.lose(errors.New("taken"))
	if err := <-got; !errors.Is(err, errNotHeld) {
		t.Errorf("lost while waiting for a renewal: %v, want errNotHeld", err)
	}
	if h.fresh() {
		t.Error("a lost hold reads fresh")
	}
}
