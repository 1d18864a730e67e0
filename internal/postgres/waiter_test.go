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
	if ok, _, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w2"); ok || err != nil {
		t.Errorf("cancel by a worker that does not own the host: %v %v, want nothing done", ok, err)
	}
	if ok, reason, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w1"); !ok || err != nil || reason != postgres.WaiterGoneReason {
		t.Fatalf("cancel by the owner: %v %v", ok, err)
	}
	if ok, _, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w1"); ok || err != nil {
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
	if ok, _, err := e.store.CancelWaiterGone(e.ctx, o.ID, "w1"); ok || err != nil {
		t.Errorf("cancel of an order whose waiter came back: %v %v, want nothing done", ok, err)
	}
	e.claim(o.ID, "w1")
}

// TestClaimOfAnEndedParentsChild: a sub-runbook run bound to the run that
// waits for it (parent_run) is claimed while that run holds its
// delegation; once the run has ended (its delegation erased with its
// status), the claim refuses the child with ErrWaiterGone and its host's
// owner cancels it, once, saying the parent ended. A child bound to no
// run is claimed whatever its chain's runs did.
func TestClaimOfAnEndedParentsChild(t *testing.T) {
	e := newStoreEnv(t)
	e.own("web-1", "w1")
	e.own("web-2", "w2")
	parent := e.insert("web-1", "alice", func(o *order.Order) { o.Kind, o.Command = order.KindScript, "runbook:P.md" })
	if err := e.store.InsertDelegation(e.ctx, "orderly-rb-test-"+parent.ID.String(), postgres.Delegation{OrderID: parent.ID,
		Principal: "alice", Kind: "token", CorrelationID: "c", Stack: []string{"P.md"}, Hosts: []string{"web-1"}}); err != nil {
		t.Fatal(err)
	}
	e.claim(parent.ID, "w1")
	child := func(bound bool) *order.Order {
		return e.insert("web-2", "alice", func(o *order.Order) {
			o.Kind, o.Command, o.Source = order.KindScript, "runbook:C.md", "runbook"
			if bound {
				o.ParentRun = parent.ID
			}
		})
	}
	e.claim(child(true).ID, "w2")
	waiting, unbound := child(true), child(false)
	e.exec(`UPDATE orders SET status = 'interrupted', finished_at = now() WHERE id = $1`, parent.ID)

	if _, claimed, err := e.store.Claim(e.ctx, waiting.ID, "w2", 2); !errors.Is(err, postgres.ErrWaiterGone) || claimed {
		t.Fatalf("claim of the child of an ended run: %v %v, want ErrWaiterGone", claimed, err)
	}
	if ok, _, err := e.store.CancelWaiterGone(e.ctx, waiting.ID, "w1"); ok || err != nil {
		t.Errorf("cancel by a worker that does not own the child's host: %v %v, want nothing done", ok, err)
	}
	if ok, reason, err := e.store.CancelWaiterGone(e.ctx, waiting.ID, "w2"); !ok || err != nil || reason != postgres.ParentEndedReason {
		t.Fatalf("cancel by the owner: %v %q %v", ok, reason, err)
	}
	if ok, _, err := e.store.CancelWaiterGone(e.ctx, waiting.ID, "w2"); ok || err != nil {
		t.Errorf("a second cancel: %v %v, want nothing done", ok, err)
	}
	c := e.get(waiting.ID)
	if c.Status != order.StatusCanceled || c.StartedAt != nil || c.Result == nil || c.Result.Error != postgres.ParentEndedReason {
		t.Errorf("the canceled child: %s started %v result %+v", c.Status, c.StartedAt, c.Result)
	}
	if got := e.texts(`SELECT actor || ' ' || (detail->>'reason') || ' ' || (detail->>'parent_run') FROM order_events WHERE order_id = $1 AND type = 'canceled'`, waiting.ID); len(got) != 1 || got[0] != "w2 "+postgres.ParentEndedReason+" "+parent.ID.String() {
		t.Errorf("the cancel's events: %q", got)
	}
	e.claim(unbound.ID, "w2")
}
