package postgres_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/postgres"
)

// The WAL an order's life writes in its own tables, by kind, read back
// with pg_walinspect: its insert, claim, process record (with the result,
// as for a quick command) and result through the store. Each index entry
// is a B-tree leaf insertion, each non-HOT update of orders or
// active_orders would show as an UPDATE, each row lock as a LOCK
// (docs/benchmarks.md, "PostgreSQL's work per order: indexes, triggers,
// foreign keys"): an index, a trigger or a foreign key added to the
// order's path shows here first, with its count.
func TestOrderWALRecords(t *testing.T) {
	e := newStoreEnv(t)
	e.exec(`CREATE EXTENSION IF NOT EXISTS pg_walinspect`)
	e.own("h1", "w1")
	life := func() {
		o := e.insert("h1", "alice", nil)
		c := e.claim(o.ID, "w1")
		f := succeeded("x")
		f.Record = &postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b", MachineID: "m"}
		if err := e.store.Complete(e.ctx, o.ID, c.Attempt, f); err != nil {
			t.Fatal(err)
		}
	}
	life() // the first order of a new database makes its pages and index roots
	var start, end string
	if err := e.pool.QueryRow(e.ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	life()
	if err := e.pool.QueryRow(e.ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	// pg_walinspect reads up to what is flushed, and the test cluster
	// commits without waiting for it: a transaction that writes WAL and
	// waits flushes everything before its commit.
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`SET LOCAL synchronous_commit = on`, `SELECT pg_logical_emit_message(true, 'orderly-test', '')`} {
		if _, err := tx.Exec(e.ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	// Only this database's blocks: other tests share the cluster.
	// Autovacuum's records (PRUNE, VACUUM, …) are not the order's.
	rows, err := e.pool.Query(e.ctx, `
		SELECT w.record_type, c.relname::text
		FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) w
		CROSS JOIN LATERAL (SELECT (regexp_match(w.block_ref, 'rel \d+/(\d+)/(\d+)'))[1:2] AS m) r
		JOIN pg_class c ON c.relfilenode = r.m[2]::oid
		WHERE r.m[1]::oid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND w.record_type IN ('INSERT', 'INSERT+INIT', 'UPDATE', 'HOT_UPDATE', 'DELETE', 'LOCK', 'INSERT_LEAF',
		                        'SPLIT_L', 'SPLIT_R', 'NEWROOT', 'INSERT_UPPER')`, start, end)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var kind, rel string
		if err := rows.Scan(&kind, &rel); err != nil {
			t.Fatal(err)
		}
		got[kind+" "+rel]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		// The order, its 3 events, its active row, its publish mark and
		// its process record.
		"INSERT orders":          1,
		"INSERT order_events":    3,
		"INSERT active_orders":   1,
		"INSERT unpublished":     1,
		"INSERT order_processes": 1,
		// The claim and the result in place; the mark deleted at the
		// claim, the active row at the result.
		"HOT_UPDATE orders":        2,
		"HOT_UPDATE active_orders": 1,
		"DELETE unpublished":       1,
		"DELETE active_orders":     1,
		// The events' foreign key at the insert; the row lock taken before
		// the BEFORE UPDATE trigger at the claim and at the result (the
		// key's checks there find the row locked); the claim's lock of
		// the publish mark.
		"LOCK orders":      3,
		"LOCK unpublished": 1,
		// 4 of the 11 indexes of orders for a plain order; 2 of the 4 of
		// order_events for each event, and the outcome's for the terminal
		// one; 2 of the 4 of active_orders; the mark's; the record's.
		"INSERT_LEAF orders_pkey":          1,
		"INSERT_LEAF orders_host_id":       1,
		"INSERT_LEAF orders_principal_id":  1,
		"INSERT_LEAF orders_submitted_at":  1,
		"INSERT_LEAF order_events_pkey":    3,
		"INSERT_LEAF order_events_order":   3,
		"INSERT_LEAF order_events_outcome": 1,
		"INSERT_LEAF active_orders_pkey":   1,
		"INSERT_LEAF active_orders_host":   1,
		"INSERT_LEAF unpublished_pkey":     1,
		"INSERT_LEAF order_processes_pkey": 1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("WAL records of one order's life, by kind and relation:\n%s\nwant:\n%s", walTable(got), walTable(want))
	}
}

func walTable(m map[string]int) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\t%-40s %d\n", k, m[k])
	}
	return b.String()
}
