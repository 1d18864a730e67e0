package postgres_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// A cancel of a running order and a successor's requeue of it can meet:
// the cancel locks the order, records its request and commits while the
// requeue waits for the row. The requeue must then see the request and
// leave the order running (the successor interrupts it): requeued, the
// order would run again after its cancel was answered as requested.
func TestRequeueSeesACancelRecordedWhileItWaited(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h1", "w1")
	o := e.insert("h1", "alice", func(o *order.Order) { o.Idempotent = true })
	c := e.claim(o.ID, "w1")
	e.own("h1", "w2") // the successor, which requeues

	// RequestCancel's transaction, held open after its request.
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(e.ctx)
	if _, err := tx.Exec(e.ctx, `SELECT status FROM orders WHERE id = $1 FOR UPDATE`, o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, `INSERT INTO cancel_requests (order_id, host, actor, signal) VALUES ($1, 'h1', 'bob', 'TERM')`, o.ID); err != nil {
		t.Fatal(err)
	}

	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		ok, err := e.store.Requeue(e.ctx, o.ID, c.Attempt, "w2", "takeover")
		done <- result{ok, err}
	}()
	// The requeue waits for the cancel's lock on the order.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var waiting int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("requeue did not wait for the cancel's lock: %v %v", r.ok, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the requeue never waited for the cancel's lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.ok {
		t.Fatalf("requeue after a cancel request: requeued %v (%v), want not requeued", r.ok, r.err)
	}
	if got := e.get(o.ID); got.Status != order.StatusRunning {
		t.Fatalf("status %s, want running (for the successor to interrupt)", got.Status)
	}
}
