package postgres_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// The claim and the result of an order update its row in place (HOT): no
// column an index of orders uses changes, so neither writes an index entry
// (migration 00009). With status in an index, both counted as plain
// updates. PostgreSQL's counters are read on the store's only connection,
// after asking it to flush them.
func TestClaimAndResultAreHOTUpdates(t *testing.T) {
	ctx := testenv.Context(t)
	store, pool := testenv.Store(t, testenv.Postgres(t)+"&pool_max_conns=1")
	e := &storeEnv{t: t, ctx: ctx, pool: pool, store: store}
	updates := func() (all, hot int64) {
		e.counters(`SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'orders'`, &all, &hot)
		return all, hot
	}
	e.own("h1", "w1")
	o := e.insert("h1", "alice", func(o *order.Order) { o.Env = map[string]string{"TOKEN": "x"} })
	all0, hot0 := updates()
	c := e.claim(o.ID, "w1")
	if err := store.RecordProcess(ctx, o.ID, c.Attempt, "w1", postgres.Process{PID: 1, PGID: 1, Worker: "w1", StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := store.Complete(ctx, o.ID, c.Attempt, succeeded("out")); err != nil {
		t.Fatal(err)
	}
	all1, hot1 := updates()
	if all1-all0 != 2 || hot1-hot0 != 2 {
		t.Fatalf("claim and result: %d updates of orders, %d of them HOT; want 2 and 2", all1-all0, hot1-hot0)
	}
}

// counters reads PostgreSQL's statistics with q into dest, after asking
// the connection to flush its own: on a one-connection pool, that is every
// statement the store ran.
func (e *storeEnv) counters(q string, dest ...any) {
	e.t.Helper()
	e.exec(`SELECT pg_stat_force_next_flush()`)
	if err := e.pool.QueryRow(e.ctx, q).Scan(dest...); err != nil {
		e.t.Fatal(err)
	}
}

// active_orders holds exactly the queued and running orders, whichever
// path an order takes, and the questions about active orders are answered
// from it.
func TestActiveOrdersFollowTheStatus(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h1", "w1")
	active := func() []uuid.UUID {
		t.Helper()
		rows, err := e.pool.Query(e.ctx, `SELECT id FROM active_orders ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ids []uuid.UUID
		for rows.Next() {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	past := time.Now().Add(-time.Second)

	done := e.insert("h1", "alice", nil)
	c := e.claim(done.ID, "w1")
	if got := active(); !slices.Equal(got, []uuid.UUID{done.ID}) {
		t.Fatalf("after insert and claim: active %v, want the order", got)
	}
	if err := e.store.Complete(e.ctx, done.ID, c.Attempt, succeeded("")); err != nil {
		t.Fatal(err)
	}
	canceled := e.insert("h1", "alice", nil)
	if ok, err := e.store.Cancel(e.ctx, canceled.ID, "alice", "no"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	expired := e.insert("h2", "alice", func(o *order.Order) { o.ExpiresAt = &past })
	if got, err := e.store.ExpireDue(e.ctx, 10); err != nil || len(got) != 1 || got[0].ID != expired.ID {
		t.Fatalf("expire due: %v %v, want the order past its deadline", got, err)
	}
	interrupted := e.insert("h1", "alice", nil)
	ci := e.claim(interrupted.ID, "w1")
	if ok, err := e.store.InterruptAttempt(e.ctx, interrupted.ID, ci.Attempt, "w1", "test", nil); err != nil || !ok {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	deleted := e.insert("h1", "alice", nil)
	e.exec(`DELETE FROM orders WHERE id = $1`, deleted.ID)
	if got := active(); len(got) != 0 {
		t.Fatalf("after result, cancel, expiry, interruption and delete: active %v, want none", got)
	}

	// A requeued order stays active; a running one is what takeover finds.
	requeued := e.insert("h1", "alice", func(o *order.Order) { o.Idempotent = true })
	cr := e.claim(requeued.ID, "w1")
	if ok, err := e.store.Requeue(e.ctx, requeued.ID, cr.Attempt, "w1", "takeover"); err != nil || !ok {
		t.Fatalf("requeue: %v %v", ok, err)
	}
	queued := e.insert("h1", "alice", nil)
	running := e.insert("h1", "alice", nil)
	e.claim(running.ID, "w1")
	if got := active(); !slices.Equal(got, []uuid.UUID{requeued.ID, queued.ID, running.ID}) {
		t.Fatalf("active %v, want the requeued, queued and running orders", got)
	}
	var mismatched int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM active_orders a JOIN orders o ON o.id = a.id
		WHERE a.status <> o.status OR a.host <> o.host`).Scan(&mismatched); err != nil || mismatched != 0 {
		t.Fatalf("%d rows of active_orders disagree with orders (%v)", mismatched, err)
	}
	if n, err := e.store.QueueDepth(e.ctx, "h1"); err != nil || n != 2 {
		t.Fatalf("queue depth of h1: %d %v, want 2", n, err)
	}
	if m, err := e.store.QueueDepths(e.ctx); err != nil || len(m) != 1 || m["h1"] != 2 {
		t.Fatalf("queue depths: %v %v, want h1: 2", m, err)
	}
	// A known host with an empty queue reads 0 (its series stays).
	if err := e.store.TouchHost(e.ctx, "idle-host", "v", "i"); err != nil {
		t.Fatal(err)
	}
	if m, err := e.store.QueueDepths(e.ctx); err != nil || len(m) != 2 || m["h1"] != 2 || m["idle-host"] != 0 {
		t.Fatalf("queue depths with a known idle host: %v %v, want h1: 2, idle-host: 0", m, err)
	}
	if rs, err := e.store.RunningOrders(e.ctx, "h1"); err != nil || len(rs) != 1 || rs[0].ID != running.ID {
		t.Fatalf("running orders of h1: %v %v, want the running one", rs, err)
	}
	for _, f := range []postgres.Filter{
		{Status: []order.Status{order.StatusQueued, order.StatusRunning}, Limit: 10},
		{Host: "h1", Status: []order.Status{order.StatusQueued}, Limit: 10, OldestFirst: true},
		{Status: []order.Status{order.StatusSucceeded, order.StatusCanceled}, Limit: 10},
	} {
		list, _, err := e.store.ListOrders(e.ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []uuid.UUID
		for _, o := range list {
			ids = append(ids, o.ID)
		}
		var want []uuid.UUID
		switch {
		case slices.Contains(f.Status, order.StatusSucceeded):
			want = []uuid.UUID{canceled.ID, done.ID}
		case f.Host != "":
			want = []uuid.UUID{requeued.ID, queued.ID}
		default:
			want = []uuid.UUID{running.ID, queued.ID, requeued.ID}
		}
		if !slices.Equal(ids, want) {
			t.Errorf("list %+v: %v, want %v", f, ids, want)
		}
	}
}

// Migrating up to 00009 fills active_orders with the orders that were
// queued or running, and migrating down returns the indexes on status.
func TestActiveOrdersMigration(t *testing.T) {
	e, p := migratedDown(t, 8)
	queued := e.insertBefore("h1", "alice")
	running := e.insertBefore("h1", "alice")
	finished := e.insertBefore("h1", "alice")
	e.exec(`UPDATE orders SET status = 'running' WHERE id = $1`, running.ID)
	e.exec(`UPDATE orders SET status = 'failed' WHERE id = $1`, finished.ID)
	if _, err := p.Up(e.ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	got := e.texts(`SELECT id::text || ' ' || status FROM active_orders ORDER BY id`)
	if want := []string{queued.ID.String() + " queued", running.ID.String() + " running"}; !slices.Equal(got, want) {
		t.Fatalf("active_orders after the migration: %v, want %v", got, want)
	}
	if _, err := p.DownTo(e.ctx, 8); err != nil {
		t.Fatalf("migrate down again: %v", err)
	}
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM pg_indexes WHERE tablename = 'orders' AND indexname = 'orders_status_id'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("orders_status_id after migrating down: %d %v", n, err)
	}
}
