package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestClaimOfAGoneWaitersOrder: an order bound to an API process runs
// while that process is present; once its presence lapsed (or ended),
// the claim refuses it with ErrWaiterGone and only the host's owner
// cancels it, once, recording why. An order bound to nobody is claimed
// whatever api_presence holds; one whose waiter came back is claimed.
func TestClaimOfAGoneWaitersOrder(t *testing.T) {
	e := newStoreEnv(t)
	e.own("web-1", "w1")
	live := postgres.Presence{Instance: uuid.New(), Hostname: "api-1", PID: 1}
	if err := e.store.RenewPresence(e.ctx, live, time.Minute); err != nil {
		t.Fatal(err)
	}
	bound := func(to uuid.UUID) *order.Order {
		return e.insert("web-1", "httpexec-client", func(o *order.Order) { o.Source, o.Waiter = "httpexec", to })
	}
	e.claim(bound(live.Instance).ID, "w1")
	e.claim(e.insert("web-1", "alice", nil).ID, "w1")

	gone := postgres.Presence{Instance: uuid.New(), Hostname: "api-2", PID: 2}
	if err := e.store.RenewPresence(e.ctx, gone, time.Minute); err != nil {
		t.Fatal(err)
	}
	o := bound(gone.Instance)
	// Lapsed, as a killed process's presence does (its row stays).
	if _, err := e.pool.Exec(e.ctx, `UPDATE api_presence SET alive_until = now() - interval '1 second' WHERE instance = $1`, gone.Instance); err != nil {
		t.Fatal(err)
	}
	got, claimed, err := e.store.Claim(e.ctx, o.ID, "w1", 1)
	if !errors.Is(err, postgres.ErrWaiterGone) || claimed || got == nil || got.Status != order.StatusQueued {
		t.Fatalf("claim of a gone waiter's order: %v %v %+v, want ErrWaiterGone and the order queued", claimed, err, got)
	}
	if _, _, err := e.store.Claim(e.ctx, o.ID, "w2", 1); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("claim by a worker that does not own the host: %v, want ErrNotOwner", err)
	}
	if ok, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w2"); ok || err != nil {
		t.Errorf("cancel by a worker that does not own the host: %v %v, want nothing done", ok, err)
	}
	if ok, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w1"); !ok || err != nil {
		t.Fatalf("cancel by the owner: %v %v", ok, err)
	}
	if ok, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w1"); ok || err != nil {
		t.Errorf("a second cancel: %v %v, want nothing done", ok, err)
	}
	c := e.get(o.ID)
	if c.Status != order.StatusCanceled || c.StartedAt != nil || c.Result == nil || c.Result.Error != postgres.WaiterGoneReason {
		t.Errorf("the canceled order: %s started %v result %+v", c.Status, c.StartedAt, c.Result)
	}
	if got := e.texts(`SELECT actor || ' ' || (detail->>'reason') FROM order_events WHERE order_id = $1 AND type = 'canceled'`, o.ID); len(got) != 1 || got[0] != "w1 "+postgres.WaiterGoneReason {
		t.Errorf("the cancel's events: %q", got)
	}

	// Ended in order (its row deleted): the same. Renewed again before
	// the claim: claimed.
	o = bound(gone.Instance)
	if err := e.store.EndPresence(e.ctx, gone.Instance); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Claim(e.ctx, o.ID, "w1", 1); !errors.Is(err, postgres.ErrWaiterGone) {
		t.Errorf("claim of an ended waiter's order: %v, want ErrWaiterGone", err)
	}
	if err := e.store.RenewPresence(e.ctx, gone, time.Minute); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w1"); ok || err != nil {
		t.Errorf("cancel of an order whose waiter came back: %v %v, want nothing done", ok, err)
	}
	e.claim(o.ID, "w1")
}
