package api_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestNATSRetryInPlaceSpendsOneAllowance: a NATS submission the intake
// retries in place (here its order is recorded but not published, as when
// NATS or PostgreSQL fails) is one request of its principal, however many
// attempts it takes. Each attempt took from limits.rate_per_principal, so
// a few retries refused the submission as rate_limited after its order
// had been recorded: the publisher was told it was refused, and the
// reconciler ran the order later, after the host's next submissions.
func TestNATSRetryInPlaceSpendsOneAllowance(t *testing.T) {
	failures := new(atomic.Int64)
	e := newAPIEnv(t, envOptions{hosts: []string{"allow"}, publishFailures: failures, ratePerPrincipal: 4})
	failures.Store(4) // four attempts fail, as many as the allowance
	first := e.publish("alice", "allow", "allow-first", map[string]any{"command": "true"})
	if first.Error != nil || first.Order == nil {
		t.Fatalf("a submission retried in place was refused: %+v", first.Error)
	}
	second := e.publish("alice", "allow", "allow-second", map[string]any{"command": "true"})
	if second.Error != nil || second.Order == nil {
		t.Fatalf("the next submission: %+v", second.Error)
	}
	var seqs [2]int64
	testenv.WaitUntil(t, 20*time.Second, "both orders ran", func() bool {
		err := e.pool.QueryRow(t.Context(), `SELECT
			(SELECT stream_seq FROM orders WHERE id = $1 AND status = 'succeeded'),
			(SELECT stream_seq FROM orders WHERE id = $2 AND status = 'succeeded')`,
			first.Order.ID, second.Order.ID).Scan(&seqs[0], &seqs[1])
		return err == nil
	})
	if seqs[0] >= seqs[1] {
		t.Errorf("the first submission ran from stream position %d, after the second (%d)", seqs[0], seqs[1])
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d orders (%v), want 2", n, err)
	}
}
