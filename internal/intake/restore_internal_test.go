package intake

import (
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestGuardRaisesAfterMarksLeaveAndComparesFirst: the publish generation
// is raised, in PostgreSQL and then in NATS, only after publish marks
// left unpublished (cleared by the API, or deleted by a claim the API
// did not see, of an order whose publish it took for failed), and every
// raise compares first: a database restored under a running API is
// found at the next raise, not raised past the generation NATS holds.
func TestGuardRaisesAfterMarksLeaveAndComparesFirst(t *testing.T) {
	ctx := testenv.Context(t)
	store, pool := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "guard", queue.Options{})
	var logs testenv.LogBuffer
	s := New(store, q, nil, Options{}, testenv.LoggerTo(&logs))
	gens := func() (pg, nats uint64) {
		t.Helper()
		pg, err := store.PublishGeneration(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if nats, err = q.PostgresMark(ctx); err != nil {
			t.Fatal(err)
		}
		return pg, nats
	}
	guard := func() int {
		t.Helper()
		n, err := s.guardRestore(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	guard()
	if pg, nats := gens(); pg != 0 || nats != 0 {
		t.Fatalf("after the first comparison: %d %d, want nothing raised", pg, nats)
	}
	s.cleared()
	guard()
	if pg, nats := gens(); pg != 1 || nats != 1 {
		t.Fatalf("after marks were cleared: PostgreSQL %d, NATS %d; want 1 and 1", pg, nats)
	}
	guard()
	if pg, _ := gens(); pg != 1 {
		t.Fatalf("raised again with no mark cleared: %d", pg)
	}

	// An order whose publish the API took for failed; its claim deletes
	// its mark.
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "hg", Command: "true", Principal: "alice", Source: "rest"}
	if _, err := store.InsertOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	s.publishFailed(o.ID)
	guard()
	if pg, _ := gens(); pg != 1 {
		t.Fatalf("raised while the failed publish's mark is still there: %d", pg)
	}
	if _, err := pool.Exec(ctx, `UPDATE orders SET status = 'running', attempt = 1 WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	guard()
	if pg, nats := gens(); pg != 2 || nats != 2 {
		t.Fatalf("after the claim deleted the failed publish's mark: PostgreSQL %d, NATS %d; want 2 and 2", pg, nats)
	}

	// Restored under the running API, with an order the backup held as
	// unpublished whose message is gone: the next raise finds it.
	lost := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "hg", Command: "true", Principal: "alice", Source: "rest"}
	if _, err := store.InsertOrder(ctx, lost); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE restore_mark SET generation = 1;
		UPDATE unpublished SET submitted_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	s.cleared()
	if n := guard(); n != 1 {
		t.Fatalf("the raise after the restore settled %d orders, want 1", n)
	}
	got, err := store.GetOrder(ctx, lost.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != order.StatusCanceled || got.Result == nil || !strings.Contains(got.Result.Error, "restored") {
		t.Fatalf("the order the backup held as unpublished: %s %+v", got.Status, got.Result)
	}
	if pg, nats := gens(); pg != 3 || nats != 3 {
		t.Fatalf("after the restore: PostgreSQL %d, NATS %d; want both past NATS's 2", pg, nats)
	}
	if n := strings.Count(logs.String(), "PostgreSQL is behind what NATS saw"); n != 1 {
		t.Fatalf("%d ERROR lines about the restore, want 1:\n%s", n, logs.String())
	}
}
