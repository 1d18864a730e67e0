package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// On a new database the referential check of each event on its order
// probes orders_pkey. Migration 00019's ANALYZE had recorded the empty
// orders table as known to be empty, and the planner then made the check a
// scan of every order, a plan each backend kept until autovacuum analyzed
// orders again (migration 00020).
func TestNewDatabaseChecksOrderReferencesByIndex(t *testing.T) {
	e := newStoreEnv(t)
	var tuples float64
	if err := e.pool.QueryRow(e.ctx, `SELECT reltuples FROM pg_class WHERE oid = 'orders'::regclass`).Scan(&tuples); err != nil {
		t.Fatal(err)
	}
	if tuples >= 0 {
		t.Errorf("orders of a new database has reltuples %v, want -1 (never analyzed)", tuples)
	}
	conn, err := e.pool.Acquire(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The statement PostgreSQL's foreign keys run, as a generic plan, as
	// they keep it.
	for _, q := range []string{
		`SET plan_cache_mode = force_generic_plan`,
		`PREPARE ri_check(uuid) AS SELECT 1 FROM ONLY orders x WHERE id = $1 FOR KEY SHARE OF x`,
	} {
		if _, err := conn.Exec(e.ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.Query(e.ctx, `EXPLAIN EXECUTE ri_check('00000000-0000-0000-0000-000000000000')`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if p := strings.Join(plan, "\n"); !strings.Contains(p, "orders_pkey") {
		t.Errorf("the referential check of an order is not a probe of orders_pkey:\n%s", p)
	}
}

// Migration 00020 forgets the statistics of orders only when it has no
// row: an upgrade keeps every order and its history.
func TestInsertWorkMigrationKeepsOrders(t *testing.T) {
	e, p := migratedDown(t, 19)
	o := e.insertBefore("h1", "alice")
	if _, err := p.Up(e.ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	var orders, events, marks, active int
	if err := e.pool.QueryRow(e.ctx, `SELECT (SELECT count(*) FROM orders WHERE id = $1),
		(SELECT count(*) FROM order_events WHERE order_id = $1), (SELECT count(*) FROM unpublished WHERE id = $1),
		(SELECT count(*) FROM active_orders WHERE id = $1)`, o.ID).Scan(&orders, &events, &marks, &active); err != nil {
		t.Fatal(err)
	}
	if orders != 1 || events != 1 || marks != 1 || active != 1 {
		t.Errorf("after migrating up: %d orders, %d events, %d marks, %d active rows; want 1 of each", orders, events, marks, active)
	}
}

// A publish mark no longer goes with its order by a foreign key's
// cascade (migration 00020): the reconciler's ForgetStarted drops a mark
// whose order is gone, and the republish never lists it.
func TestForgetStartedDropsTheMarkOfADeletedOrder(t *testing.T) {
	e := newStoreEnv(t)
	gone := e.insert("h1", "alice", nil)
	kept := e.insert("h1", "alice", nil)
	e.exec(`DELETE FROM orders WHERE id = $1`, gone.ID)
	list, err := e.store.Unpublished(e.ctx, -time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != kept.ID {
		t.Errorf("unpublished orders: %v, want only %s", ids(list), kept.ID)
	}
	if _, err := e.store.ForgetStarted(e.ctx); err != nil {
		t.Fatal(err)
	}
	marks := e.texts(`SELECT id::text FROM unpublished ORDER BY id`)
	if len(marks) != 1 || marks[0] != kept.ID.String() {
		t.Errorf("marks after ForgetStarted: %v, want only %s", marks, kept.ID)
	}
}

// A claim deletes its order's publish mark in its own transaction
// (migration 00020), as ForgetStarted would later: the API's batched
// delete of the marks it saw confirmed then finds nothing to delete on
// the synchronous path, and writes no WAL. An order that ends while
// queued keeps its mark until ForgetStarted, as before.
func TestClaimDeletesThePublishMark(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	claimed := e.insert("h", "p", nil)
	queued := e.insert("h", "p", nil)
	e.claim(claimed.ID, "w1")
	marks := e.texts(`SELECT id::text FROM unpublished ORDER BY id`)
	if len(marks) != 1 || marks[0] != queued.ID.String() {
		t.Errorf("marks after the claim of %s: %v, want only the queued order's %s", claimed.ID, marks, queued.ID)
	}
	if err := e.store.MarkPublished(e.ctx, []uuid.UUID{claimed.ID, queued.ID}); err != nil {
		t.Fatalf("the API's batch after the claim: %v", err)
	}
}

func ids(list []*order.Order) []string {
	var out []string
	for _, o := range list {
		out = append(out, o.ID.String())
	}
	return out
}
