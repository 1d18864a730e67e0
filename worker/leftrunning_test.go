package worker_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestOrderLeftRunningByARestoreIsSettled: PostgreSQL restored from a
// backup taken while an order ran brings it back as running, under the
// worker that ran it and still owns the host; its result and its message's
// ack came after the backup, so nothing will deliver it again. The
// takeover settles such orders only when a tenure starts: it stayed
// running for as long as the worker did. The idle worker now finds it and
// settles it (interrupted), and its host goes on.
func TestOrderLeftRunningByARestoreIsSettled(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	e := &env{t: t, store: store, q: q}
	runWorker(t, worker.Options{Host: "restored", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, SweepEvery: time.Second}, store, q, testenv.Logger(t))

	id := e.submit("restored", "sleep", "1")
	e.waitStatus(id, order.StatusRunning)
	// The backup: the order's rows as they are while it runs.
	ctx := t.Context()
	for _, sql := range []string{
		`CREATE TABLE backup_orders AS SELECT * FROM orders WHERE id = $1`,
		`CREATE TABLE backup_events AS SELECT * FROM order_events WHERE order_id = $1`,
		`CREATE TABLE backup_processes AS SELECT * FROM order_processes WHERE order_id = $1`,
	} {
		if _, err := pool.Exec(ctx, sql, id); err != nil {
			t.Fatal(err)
		}
	}
	e.waitStatus(id, order.StatusSucceeded)
	// The restore, under the worker that ran it.
	for _, sql := range []string{
		`DELETE FROM orders WHERE id = $1`,
		`INSERT INTO orders SELECT * FROM backup_orders`,
		`INSERT INTO order_events SELECT * FROM backup_events`,
		`INSERT INTO order_processes SELECT * FROM backup_processes`,
	} {
		args := []any{id}
		if sql[0] == 'I' {
			args = nil
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	e.waitStatus(id, order.StatusInterrupted)
	e.waitStatus(e.submit("restored", "true"), order.StatusSucceeded)
}
