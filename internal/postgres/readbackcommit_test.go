package postgres_test

import (
	"reflect"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestReadBackOnlyOfACommittedResult: the order a result's statement
// returns (Finish.ReadBack, which serve's worker hands to a waiting
// request) is kept only once its transaction committed. PostgreSQL sends
// the statement's row before the implicit transaction's commit; a commit
// that then fails (here a deferred constraint trigger of the test's,
// raising at COMMIT for one order's "finished" event) rolled the result
// back, and its row, with a finished_at and status no read will ever
// give, must reach no one: Complete and CompleteAndClaim (a pipelined
// next claim sharing the transaction) fail and leave ReadBack empty, the
// order still running. A result refused by its guard (a stale attempt:
// a lost answer's retry, a successor's mark) returns no row and leaves
// it empty too. The result written afterwards is read back as the row
// GetOrder gives.
func TestReadBackOnlyOfACommittedResult(t *testing.T) {
	e := newStoreEnv(t)
	e.own("rbc", "w1")
	e.exec(`CREATE TABLE hj30_refuse (id uuid PRIMARY KEY)`)
	e.exec(`CREATE FUNCTION hj30_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.type = 'finished' AND EXISTS (SELECT 1 FROM hj30_refuse WHERE id = NEW.order_id) THEN
		RAISE EXCEPTION 'hJ30: commit of % refused', NEW.order_id;
	END IF;
	RETURN NULL;
END $$`)
	e.exec(`CREATE CONSTRAINT TRIGGER hj30_refuse AFTER INSERT ON order_events
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hj30_refuse()`)

	// try writes f's result of o, alone or with next's claim, as the
	// worker does, reading it back.
	try := func(o *order.Order, next *order.Order, f postgres.Finish) (*order.Order, error) {
		f.ReadBack = &postgres.ReadBack{}
		var err error
		if next == nil {
			err = e.store.Complete(e.ctx, o.ID, o.Attempt, f)
		} else {
			var step postgres.Step
			step, err = e.store.CompleteAndClaim(e.ctx, o.ID, o.Attempt, f, next.ID, "w1", 2)
			if err == nil && step.Done != nil {
				err = step.Done
			}
		}
		return f.ReadBack.Order, err
	}
	withRecord := func(f postgres.Finish) postgres.Finish {
		f.Record = &postgres.Process{PID: 4242, PGID: 4242, StartTime: 1, BootID: "b", MachineID: "m", PidNS: 1}
		return f
	}
	for _, c := range []struct {
		name      string
		pipelined bool
		f         postgres.Finish
	}{
		{"alone", false, succeeded("out")},
		{"alone, its process record with it", false, withRecord(succeeded("out"))},
		{"with the next order's claim", true, succeeded("out")},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := e.insert("rbc", "p", nil)
			o = e.claim(o.ID, "w1")
			var next *order.Order
			if c.pipelined {
				next = e.insert("rbc", "p", nil)
			}
			e.exec(`INSERT INTO hj30_refuse VALUES ($1)`, o.ID)
			got, err := try(o, next, c.f)
			if err == nil {
				t.Fatalf("the result's commit was refused, but its write returned no error")
			}
			if got != nil {
				t.Fatalf("a result whose commit failed (%v) was read back: %s at %v", err, got.Status, got.FinishedAt)
			}
			if st := e.get(o.ID).Status; st != order.StatusRunning {
				t.Fatalf("after the refused commit the order is %s, want running", st)
			}
			e.exec(`DELETE FROM hj30_refuse WHERE id = $1`, o.ID)

			// A try under a stale attempt is refused by the guard.
			stale := *o
			stale.Attempt++
			if got, err := try(&stale, nil, c.f); order.ErrorCode(err) != order.CodeConflict || got != nil {
				t.Fatalf("a stale attempt's result: %v, read back %v; want a conflict, nothing read back", err, got != nil)
			}

			got, err = try(o, next, c.f)
			if err != nil {
				t.Fatal(err)
			}
			if want := e.get(o.ID); !reflect.DeepEqual(got, want) {
				t.Fatalf("read back as\n%+v\nstored as\n%+v", got, want)
			}
			// Its retry (an answer lost after the commit) finds it
			// written: refused, nothing read back.
			if got, err := try(o, nil, c.f); order.ErrorCode(err) != order.CodeConflict || got != nil {
				t.Fatalf("the written result's retry: %v, read back %v; want a conflict, nothing read back", err, got != nil)
			}
		})
	}
}
