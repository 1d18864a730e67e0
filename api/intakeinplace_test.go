package api_test

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
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
	e.ranInOrder(first.Order.ID, second.Order.ID)
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d orders (%v), want 2", n, err)
	}
}

// TestNATSRecordedSubmissionIsNotRefusedOnRetry: a NATS submission whose
// order was recorded but not yet published to its host's stream is
// retried in place; when its principal's token is revoked meanwhile (a
// reload, a rotation), the retry still only publishes it. It ran every
// check again and refused the submission as unauthenticated, while its
// recorded order was queued by the reconciler later, behind the host's
// next submission: told it was refused, the publisher saw it run out of
// its order.
func TestNATSRecordedSubmissionIsNotRefusedOnRetry(t *testing.T) {
	failures := new(atomic.Int64)
	e := newAPIEnv(t, envOptions{hosts: []string{"rec"}, publishFailures: failures})
	nc, inbox, sub := replyInbox(t, e.natsURL)
	failures.Store(1 << 30) // until the token is revoked
	m := nats.NewMsg(queue.SubmitSubject + "rec")
	m.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	m.Header.Set("Orderly-Reply", inbox)
	m.Header.Set("Nats-Msg-Id", "rec-first")
	m.Data = []byte(`{"command":"true"}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 20*time.Second, "the first submission's order is recorded", func() bool {
		var n int
		_ = e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE idempotency_key = 'rec-first'`).Scan(&n)
		return n == 1
	})
	e.revoke("alice")
	failures.Store(0)
	reply, err := sub.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no answer to the first submission: %v", err)
	}
	var first api.IntakeAnswer
	if err := json.Unmarshal(reply.Data, &first); err != nil {
		t.Fatal(err)
	}
	if first.Order == nil {
		t.Fatalf("the recorded submission was refused on its retry: %+v", first.Error)
	}
	second := e.publish("bob", "rec", "rec-second", map[string]any{"command": "true"})
	if second.Order == nil {
		t.Fatalf("the next submission: %+v", second.Error)
	}
	e.ranInOrder(first.Order.ID, second.Order.ID)
}

// ranInOrder waits until orders first and second both succeeded, and
// checks that first ran from the earlier position in its host's stream.
func (e *apiEnv) ranInOrder(first, second uuid.UUID) {
	e.t.Helper()
	var seqs [2]int64
	testenv.WaitUntil(e.t, 20*time.Second, "both orders ran", func() bool {
		err := e.pool.QueryRow(e.t.Context(), `SELECT
			(SELECT stream_seq FROM orders WHERE id = $1 AND status = 'succeeded'),
			(SELECT stream_seq FROM orders WHERE id = $2 AND status = 'succeeded')`,
			first, second).Scan(&seqs[0], &seqs[1])
		return err == nil
	})
	if seqs[0] >= seqs[1] {
		e.t.Errorf("the first submission ran from stream position %d, after the second (%d)", seqs[0], seqs[1])
	}
}
