package postgres_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestSubmissionRejections: a NATS refusal names the order id of its
// submission; it is not recorded once that order exists (a replica thawed
// after another accepted the submission, and killed before its pin check
// withdrew the row), and a take-up of the submission deletes it.
func TestSubmissionRejections(t *testing.T) {
	e := newStoreEnv(t)
	refusal := func(id order.Order) postgres.Rejection {
		return postgres.Rejection{Source: "nats", Method: "PUBLISH", Path: "orderly.submit.h", Status: 429,
			Code: "rate_limited", Reason: "slow down", Request: map[string]any{"host": "h"}, Submission: id.ID}
	}
	count := func(id string) int {
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM rejections WHERE request->>'order_id' = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	accepted := e.insert("h", "alice", func(o *order.Order) { o.Source = "nats" })
	if id, err := e.store.RecordRejectionID(e.ctx, refusal(*accepted)); err != nil || id != 0 {
		t.Fatalf("a refusal of an accepted submission: row %d, %v", id, err)
	}
	if n := count(accepted.ID.String()); n != 0 {
		t.Fatalf("%d rows refuse the accepted submission %s", n, accepted.ID)
	}
	pending := order.Order{ID: order.NewID()}
	if id, err := e.store.RecordRejectionID(e.ctx, refusal(pending)); err != nil || id == 0 {
		t.Fatalf("a refusal: row %d, %v", id, err)
	}
	if n := count(pending.ID.String()); n != 1 {
		t.Fatalf("%d rows of the refusal", n)
	}
	// A REST refusal has no submission and is recorded as before.
	if id, err := e.store.RecordRejectionID(e.ctx, postgres.Rejection{Status: 400, Code: "invalid_request", Reason: "bad"}); err != nil || id == 0 {
		t.Fatalf("a REST refusal: row %d, %v", id, err)
	}
	if n, err := e.store.DeleteSubmissionRejections(e.ctx, pending.ID, time.Now().Add(-time.Hour)); err != nil || n != 1 {
		t.Fatalf("deleted %d rows of the submission's refusal, %v", n, err)
	}
	if n := count(pending.ID.String()); n != 0 {
		t.Fatalf("%d rows left", n)
	}
}
