package api_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// holdingStore holds up the intake once it recorded its first
// rate_limited refusal, until release is closed, as a replica frozen in
// the middle of refusing a submission.
type holdingStore struct {
	intake.Store
	once    *sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h holdingStore) RecordRejectionID(ctx context.Context, r postgres.Rejection) (int64, error) {
	id, err := h.Store.RecordRejectionID(ctx, r)
	if r.Code == "rate_limited" {
		h.once.Do(func() { close(h.entered); <-h.release })
	}
	return id, err
}

// TestNATSRefusalAfterTheIntakeMovedIsNotAnswered: a replica that lost
// the intake's pin while it was refusing a submission (frozen, stalled)
// leaves the answer to the replica pinned now, which takes the submission
// up again. It answered anyway: a rate limit is each replica's own, so the
// publisher heard the other replica's order for it and then this one's
// rate_limited.
func TestNATSRefusalAfterTheIntakeMovedIsNotAnswered(t *testing.T) {
	hold := holdingStore{once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	a := newAPIEnv(t, envOptions{ratePerPrincipal: 1,
		intakeStore: func(s intake.Store) intake.Store { hold.Store = s; return hold }})
	defer func() {
		select {
		case <-hold.release:
		default:
			close(hold.release)
		}
	}()
	// The first submission spends alice's allowance on a, the only replica.
	if first := a.publish("alice", "moved", "moved-1", map[string]any{"command": "true"}); first.Order == nil {
		t.Fatalf("first submission: %+v", first.Error)
	}
	newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: a.tokens, ratePerPrincipal: 1})

	nc, inbox, sub := replyInbox(t, a.natsURL)
	m := nats.NewMsg(queue.SubmitSubject + "moved")
	m.Header.Set("Authorization", "Bearer "+a.tokens["alice"])
	m.Header.Set("Orderly-Reply", inbox)
	m.Header.Set("Nats-Msg-Id", "moved-2")
	m.Data = []byte(`{"command":"true"}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first replica did not refuse the second submission")
	}
	// The first replica stops pulling, mid-refusal: the other is pinned
	// after the pinned TTL and takes the submission up again.
	a.stop()
	answer := func(d time.Duration) *api.IntakeAnswer {
		msg, err := sub.NextMsg(d)
		if err != nil {
			return nil
		}
		var ans api.IntakeAnswer
		if err := json.Unmarshal(msg.Data, &ans); err != nil {
			t.Fatal(err)
		}
		return &ans
	}
	got := answer(30 * time.Second)
	if got == nil || got.Order == nil {
		t.Fatalf("the replica pinned next answered %+v", got)
	}
	close(hold.release)
	if again := answer(3 * time.Second); again != nil {
		t.Errorf("answered its order %s, then by the replica that lost the intake: %+v (error %+v)",
			got.Order.ID, again.Order, again.Error)
	}
	// Nor is it recorded as refused: the audit said rate_limited of a
	// submission whose order ran.
	var refused int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE request->>'nats_msg_id' = 'moved-2'`).Scan(&refused); err != nil || refused != 0 {
		t.Errorf("%d rejections of the accepted submission moved-2 (%v)", refused, err)
	}
}

// TestNATSRefusalOfAKilledReplicaIsWithdrawn: a replica killed between
// recording a refusal and confirming its pin never withdraws the row (the
// held call below never returns before the check, as a SIGKILL's never
// does). The replica pinned next took the submission up again and
// accepted it, and the audit said rate_limited of a submission whose
// order ran. The row names the submission's order id; the take-up that
// follows withdraws it before judging the submission anew.
func TestNATSRefusalOfAKilledReplicaIsWithdrawn(t *testing.T) {
	hold := holdingStore{once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	defer close(hold.release)
	a := newAPIEnv(t, envOptions{ratePerPrincipal: 1,
		intakeStore: func(s intake.Store) intake.Store { hold.Store = s; return hold }})
	if first := a.publish("alice", "killed", "killed-1", map[string]any{"command": "true"}); first.Order == nil {
		t.Fatalf("first submission: %+v", first.Error)
	}
	newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: a.tokens, ratePerPrincipal: 1})
	sub := sendSubmission(t, a, "killed", "killed-2")
	select {
	case <-hold.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first replica did not refuse the second submission")
	}
	var recorded string
	if err := a.pool.QueryRow(t.Context(), `SELECT request->>'order_id' FROM rejections
		WHERE request->>'nats_msg_id' = 'killed-2'`).Scan(&recorded); err != nil {
		t.Fatalf("the refusal's row, with its order id: %v", err)
	}
	a.stop() // the replica is gone: it pulls no more and never reaches its check
	got := nextAnswer(t, sub, 30*time.Second)
	if got.Order == nil {
		t.Fatalf("the replica pinned next answered %+v", got.Error)
	}
	if got.Order.ID.String() != recorded {
		t.Errorf("the refusal named order %s; the submission's order is %s", recorded, got.Order.ID)
	}
	var refused int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE request->>'nats_msg_id' = 'killed-2'`).Scan(&refused); err != nil || refused != 0 {
		t.Errorf("%d rejections of the accepted submission killed-2 (%v)", refused, err)
	}
}
