package api_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// gateStore holds the insert of the order with idempotency key key up
// until open is closed, after closing entered.
type gateStore struct {
	intake.Store
	key     string
	entered chan struct{}
	open    chan struct{}
}

func (g gateStore) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	if o.IdempotencyKey == g.key {
		close(g.entered)
		<-g.open
	}
	return g.Store.InsertOrder(ctx, o)
}

// TestNATSSubmissionRecordedUnderAnotherPrincipalIsAnsweredFromItsRecord:
// one stored message taken up by two replicas at once (the first stalled
// in its insert past the takeover), whose token names another principal
// on the second (remapped by a reload). Both give its order the stored
// message's id; the first records it, as alice, and the second's insert,
// as bob, met that id: it refused the submission as "conflict" while its
// order ran. The record wins, as a takeover's lookup already decides: the
// second answers with the recorded order.
func TestNATSSubmissionRecordedUnderAnotherPrincipalIsAnsweredFromItsRecord(t *testing.T) {
	const key = "two-principals"
	ga := gateStore{key: key, entered: make(chan struct{}), open: make(chan struct{})}
	gb := gateStore{key: key, entered: make(chan struct{}), open: make(chan struct{})}
	a := newAPIEnv(t, envOptions{intakeStore: func(s intake.Store) intake.Store { ga.Store = s; return ga }})
	if warm := a.publish("alice", "twop", "twop-warm", map[string]any{"command": "true"}); warm.Order == nil {
		t.Fatalf("first submission: %+v", warm.Error)
	}
	remapped := maps.Clone(a.tokens)
	delete(remapped, "alice")
	remapped["bob"] = a.tokens["alice"]
	b := newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: remapped,
		intakeStore: func(s intake.Store) intake.Store { gb.Store = s; return gb }})
	sub := sendSubmission(t, a, "twop", key)
	select {
	case <-ga.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the first replica did not take the submission up")
	}
	a.stop() // stalled: the other replica is pinned and takes it up again
	select {
	case <-gb.entered:
	case <-time.After(40 * time.Second):
		t.Fatal("the replica pinned next did not take the submission up")
	}
	close(ga.open)
	var recorded, principal string
	testenv.WaitUntil(t, 20*time.Second, "the first replica records the order", func() bool {
		return b.pool.QueryRow(t.Context(), `SELECT id::text, principal FROM orders WHERE idempotency_key = $1`, key).
			Scan(&recorded, &principal) == nil
	})
	close(gb.open)
	for i := range 2 {
		got := nextAnswer(t, sub, 20*time.Second)
		if got.Order == nil || got.Order.ID.String() != recorded {
			t.Errorf("answer %d: order %+v, error %+v; recorded %s as %s", i, got.Order, got.Error, recorded, principal)
		}
	}
	var n int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE request->>'nats_msg_id' = $1`, key).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d rejections of the recorded submission (%v)", n, err)
	}
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE idempotency_key = $1`, key).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d orders of one stored message (%v)", n, err)
	}
}
