package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// TestActionLimitLooksTheKeyUpUnderItsLock: two inserts of one limited
// action's run with one idempotency key, both waiting for the action's
// lock (held here until they do), are one run: the first is recorded, the
// second is answered with it. The trigger looked the key up before it
// took the lock (migration 00014), so the second found none, then
// counted the first's run against the limit and was refused
// (migration 00021 looks it up with the lock held).
func TestActionLimitLooksTheKeyUpUnderItsLock(t *testing.T) {
	e := newStoreEnv(t)
	ctx := e.ctx
	if _, err := e.pool.Exec(ctx, `INSERT INTO action_locks (action) VALUES ('once') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM action_locks WHERE action = 'once' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		o, prev *order.Order
		err     error
	}
	outcomes := make(chan outcome, 2)
	for range 2 {
		go func() {
			o := &order.Order{ID: order.NewID(), Kind: order.KindAction, Host: "lk-1", Command: "action:once",
				Timeout: time.Minute, Principal: "alice", Source: "rest", IdempotencyKey: "once-1",
				Action: &order.Action{Name: "once", Params: map[string]string{},
					Limit: order.ActionLimit{Runs: 1, Per: time.Hour, ConcurrentPerHost: 1}}}
			prev, err := e.store.InsertOrder(ctx, o)
			outcomes <- outcome{o, prev, err}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO orders%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d inserts wait for the action's lock, want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var recorded, answered []outcome
	for range 2 {
		oc := <-outcomes
		switch {
		case oc.err != nil:
			t.Errorf("an insert with the key: %v", oc.err)
		case oc.prev == nil:
			recorded = append(recorded, oc)
		default:
			answered = append(answered, oc)
		}
	}
	if len(recorded) != 1 || len(answered) != 1 || answered[0].prev.ID != recorded[0].o.ID {
		t.Fatalf("recorded %d, answered with the first %d; want one run answered to both", len(recorded), len(answered))
	}
}
