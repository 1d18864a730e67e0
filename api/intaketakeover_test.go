package api_test

import (
	"context"
	"encoding/json"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// sendSubmission publishes one NATS submission of alice's for host with
// Nats-Msg-Id key and returns where its answer arrives.
func sendSubmission(t *testing.T, e *apiEnv, host, key string) *nats.Subscription {
	t.Helper()
	nc, inbox, sub := replyInbox(t, e.natsURL)
	publishSubmission(t, nc, e.tokens["alice"], inbox, host, key, json.RawMessage(`{"command":"true"}`))
	return sub
}

func nextAnswer(t *testing.T, sub *nats.Subscription, d time.Duration) api.IntakeAnswer {
	t.Helper()
	reply, err := sub.NextMsg(d)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var a api.IntakeAnswer
	if err := json.Unmarshal(reply.Data, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestNATSTakeoverAnswersARecordedSubmissionFromItsRecord: a replica that
// dies after recording a submission's order, before publishing it, leaves
// the submission to the replica pinned next, which answers it from its
// record. It ran every check again, and a reload in between (here alice's
// token revoked) refused it, while the reconciler ran its recorded order
// anyway, behind the host's next submission: the publisher was told both
// that it was refused and, by the host, that it ran.
func TestNATSTakeoverAnswersARecordedSubmissionFromItsRecord(t *testing.T) {
	failures := new(atomic.Int64)
	a := newAPIEnv(t, envOptions{publishFailures: failures})
	// a is pinned: it answers the first submission, alone.
	if warm := a.publish("alice", "tko-warm", "tko-warm", map[string]any{"command": "true"}); warm.Order == nil {
		t.Fatalf("first submission: %+v", warm.Error)
	}
	b := newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: a.tokens, hosts: []string{"tko"}})
	failures.Store(1 << 30) // a records, never publishes
	sub := sendSubmission(t, a, "tko", "tko-first")
	var recorded string
	testenv.WaitUntil(t, 20*time.Second, "a records the submission's order", func() bool {
		return a.pool.QueryRow(t.Context(), `SELECT id::text FROM orders WHERE idempotency_key = 'tko-first'`).Scan(&recorded) == nil
	})
	a.stop() // dies with the submission unacknowledged
	b.revoke("alice")
	first := nextAnswer(t, sub, 40*time.Second)
	if first.Order == nil {
		t.Fatalf("the replica pinned next refused the recorded submission: %+v", first.Error)
	}
	if first.Order.ID.String() != recorded {
		t.Fatalf("answered order %s, recorded %s", first.Order.ID, recorded)
	}
	var n int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE request->>'nats_msg_id' = 'tko-first'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rejections of the accepted submission (%v)", n, err)
	}
	second := b.publish("bob", "tko", "tko-second", map[string]any{"command": "true"})
	if second.Order == nil {
		t.Fatalf("the next submission: %+v", second.Error)
	}
	b.ranInOrder(first.Order.ID, second.Order.ID)
}

// lostCommitStore records the order of the submission with idempotency
// key "lost-commit", then calls lost and fails as a connection lost at the
// commit does: the intake cannot tell whether the order was recorded.
type lostCommitStore struct {
	intake.Store
	lost func()
	done *atomic.Bool
}

func (s lostCommitStore) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	prev, err := s.Store.InsertOrder(ctx, o)
	if err == nil && o.IdempotencyKey == "lost-commit" && s.done.CompareAndSwap(false, true) {
		s.lost()
		return nil, &order.Error{Code: order.CodeUnavailable, Message: "database unavailable: the order may have been recorded",
			Details: map[string]any{"order_id": o.ID}}
	}
	return prev, err
}

// TestNATSRetryAfterAnUnknownInsertAnswersFromTheRecord: an intake
// attempt whose insert had an unknown outcome (it did commit) is retried
// in place; a reload meanwhile (alice's token revoked) does not refuse
// it, since its order is recorded. The retry ran every check again and
// refused it as unauthenticated, while the reconciler ran the order.
func TestNATSRetryAfterAnUnknownInsertAnswersFromTheRecord(t *testing.T) {
	var e *apiEnv
	lost := lostCommitStore{done: new(atomic.Bool), lost: func() { e.revoke("alice") }}
	e = newAPIEnv(t, envOptions{hosts: []string{"lc"},
		intakeStore: func(s intake.Store) intake.Store { lost.Store = s; return lost }})
	sub := sendSubmission(t, e, "lc", "lost-commit")
	first := nextAnswer(t, sub, 20*time.Second)
	if first.Order == nil {
		t.Fatalf("a recorded submission was refused on its retry: %+v", first.Error)
	}
	if !lost.done.Load() {
		t.Fatal("the insert was not interrupted")
	}
	second := e.publish("bob", "lc", "lost-commit-2", map[string]any{"command": "true"})
	if second.Order == nil {
		t.Fatalf("the next submission: %+v", second.Error)
	}
	e.ranInOrder(first.Order.ID, second.Order.ID)
}

// TestNATSSubmissionRecordedBeforeTheConsumerWasMadeAgainIsAnsweredFromItsRecord:
// a replica that recorded a submission's order and stopped before its
// ack, then the intake consumer deleted and made again (as an upgrade
// does), and alice's token gone from the replica that takes over. The
// new consumer delivers the submission as new, so it was checked again
// and refused as unauthenticated, while its recorded order ran.
func TestNATSSubmissionRecordedBeforeTheConsumerWasMadeAgainIsAnsweredFromItsRecord(t *testing.T) {
	failures := new(atomic.Int64)
	a := newAPIEnv(t, envOptions{publishFailures: failures})
	if warm := a.publish("alice", "remade", "remade-warm", map[string]any{"command": "true"}); warm.Order == nil {
		t.Fatalf("first submission: %+v", warm.Error)
	}
	failures.Store(1 << 30) // a records, never publishes
	sub := sendSubmission(t, a, "remade", "remade-first")
	var recorded string
	testenv.WaitUntil(t, 20*time.Second, "a records the submission's order", func() bool {
		return a.pool.QueryRow(t.Context(), `SELECT id::text FROM orders WHERE idempotency_key = 'remade-first'`).Scan(&recorded) == nil
	})
	a.stop()
	nc, _, _ := replyInbox(t, a.natsURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(t.Context(), queue.SubmitStream, queue.IntakeConsumerName); err != nil {
		t.Fatal(err)
	}
	tokens := maps.Clone(a.tokens)
	delete(tokens, "alice")
	newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: tokens})
	got := nextAnswer(t, sub, 40*time.Second)
	if got.Order == nil || got.Order.ID.String() != recorded {
		t.Fatalf("answered %+v (error %+v); recorded %s", got.Order, got.Error, recorded)
	}
}
