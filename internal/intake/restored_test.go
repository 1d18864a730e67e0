package intake_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestDropEndedNamesOrdersItDoesNotKnow: after PostgreSQL is restored from
// a backup, the orders stream holds messages of orders accepted after the
// backup, which no row records. On a host with a worker, the worker drops
// each with an ERROR line naming it; on a host with none, DropEnded
// dropped them with a count only, so the operator had no way to tell
// which accepted orders were lost. Each is now logged by id.
func TestDropEndedNamesOrdersItDoesNotKnow(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	var logs testenv.LogBuffer
	svc := intake.New(e.store, e.pub, nil, intake.Options{}, testenv.LoggerTo(&logs))
	lost := order.NewID() // accepted after the backup: published, no row
	if _, err := e.q.Publish(e.ctx, "hrestored", lost); err != nil {
		t.Fatal(err)
	}
	o, err := e.svc.Submit(e.ctx, alice, newOrder("hrestored", "true"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.Cancel(e.ctx, o.ID, "test", "canceled by the test"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}

	if n, err := svc.DropEnded(e.ctx); err != nil || n != 2 {
		t.Fatalf("DropEnded = %d, %v; want both messages dropped", n, err)
	}
	var named []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "not in the database") {
			named = append(named, l)
		}
	}
	if len(named) != 1 || !strings.Contains(named[0], lost.String()) || !strings.Contains(named[0], "level=ERROR") {
		t.Fatalf("log lines about orders not in the database: %q; want one ERROR naming %s", named, lost)
	}
}

// TestReconcileSettlesWhatARestoredBackupHeldUnpublished: PostgreSQL is
// restored from a backup that held two orders as not yet published. One
// was published and ran after the backup (its message acknowledged and
// purged since: none left); the other's message is still in the stream.
// The reconciler published both again, and the first ran twice. It now
// finds PostgreSQL behind the publish generation kept in NATS: the first
// is canceled, saying why, the second left to its message, nothing is
// published, and the generation is raised past NATS's, so that an order
// whose publish fails afterwards is published as before.
func TestReconcileSettlesWhatARestoredBackupHeldUnpublished(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{ReconcileAfter: time.Millisecond})
	var logs testenv.LogBuffer
	svc := intake.New(e.store, e.pub, nil, intake.Options{ReconcileAfter: time.Millisecond}, testenv.LoggerTo(&logs))
	// What the backup holds: generation 1, both orders unpublished.
	gen, err := e.store.RaisePublishGeneration(e.ctx, 0)
	if err != nil || gen != 1 {
		t.Fatalf("raise: %d %v", gen, err)
	}
	e.pub.failures.Store(2)
	ran, err := e.svc.Submit(e.ctx, alice, newOrder("hr", "true"))
	if !isNotPublished(err) {
		t.Fatal(err)
	}
	waiting, err := e.svc.Submit(e.ctx, alice, newOrder("hr", "echo", "hi"))
	if !isNotPublished(err) {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(e.ctx, "hr", waiting.ID); err != nil { // its message, still in the stream
		t.Fatal(err)
	}
	// Since the backup, marks were cleared and the generation raised to
	// 2, in PostgreSQL and then in NATS; the restore took PostgreSQL back.
	if gen, err = e.store.RaisePublishGeneration(e.ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.q.RaisePostgresMark(e.ctx, gen); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE restore_mark SET generation = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE unpublished SET submitted_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}

	if n, err := svc.Reconcile(e.ctx); err != nil || n != 0 {
		t.Fatalf("reconcile after the restore: %d %v, want nothing published", n, err)
	}
	if got := e.queued("hr"); len(got) != 1 || got[0] != waiting.ID {
		t.Fatalf("the host's stream holds %v, want only the waiting order's message", got)
	}
	o, err := e.store.GetOrder(e.ctx, ran.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusCanceled || o.Result == nil || !strings.Contains(o.Result.Error, "restored") {
		t.Fatalf("the order that ran after the backup: %s %+v, want canceled saying PostgreSQL was restored", o.Status, o.Result)
	}
	if o, err := e.store.GetOrder(e.ctx, waiting.ID); err != nil || o.Status != order.StatusQueued {
		t.Fatalf("the order whose message waits: %v %v, want queued", o, err)
	}
	if n := e.count(`SELECT count(*) FROM unpublished`); n != 0 {
		t.Fatalf("%d unpublished marks left", n)
	}
	st := svc.RestoreStatus()
	if st == nil || st.Canceled != 1 || st.Queued != 1 || st.NATSGeneration != 2 || st.PostgresGeneration != 1 {
		t.Fatalf("restore status %+v", st)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"PostgreSQL is behind what NATS saw") {
		t.Fatalf("no ERROR about the restore in:\n%s", logs.String())
	}
	pg, err := e.store.PublishGeneration(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nats, err := e.q.PostgresMark(e.ctx); err != nil || pg <= 2 || nats != pg {
		t.Fatalf("generation after the restore: PostgreSQL %d, NATS %d %v; want both past 2", pg, nats, err)
	}

	// Afterwards, an order whose publish failed is published as before.
	e.pub.failures.Store(1)
	later, err := e.svc.Submit(e.ctx, alice, newOrder("hr", "true"))
	if !isNotPublished(err) {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE unpublished SET submitted_at = now() - interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.Reconcile(e.ctx); err != nil || n != 1 {
		t.Fatalf("reconcile of a failed publish after the restore: %d %v, want 1", n, err)
	}
	if got := e.queued("hr"); len(got) != 2 || got[1] != later.ID {
		t.Fatalf("the host's stream holds %v, want the waiting order's message and then %s", got, later.ID)
	}
}

func isNotPublished(err error) bool {
	var np *intake.ErrNotPublished
	return errors.As(err, &np)
}
