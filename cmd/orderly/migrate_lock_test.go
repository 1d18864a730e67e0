package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestMigrateDownWaitsBesideADump: `orderly migrate down` beside a
// pg_dump's transaction stopped at its first lock wait (`orderly stopped
// … 55P03`: 00027's ALTER TABLE runbook_delegations waited for the dump's
// reader's lock), where `migrate up` gives up, says so and tries again.
// Down does as up now: the operator reads the same line on stderr, and
// the down ends once the dump did.
func TestMigrateDownWaitsBesideADump(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	// Down to 00027, the one that alters runbook_delegations: one down
	// per migration above it (00028's, 00029's, … as they come).
	for {
		var top int64
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		err = conn.QueryRow(t.Context(), `SELECT max(version_id) FROM goose_db_version`).Scan(&top)
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if top <= 27 {
			break
		}
		if out, err := runCmd(t, "migrate", "down", "--database-url", dsn); err != nil {
			t.Fatalf("migrate down: %v\n%s", err, out)
		}
	}
	holder, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT count(*) FROM runbook_delegations`); err != nil {
		t.Fatal(err)
	}
	watch, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runCmd(t, "migrate", "down", "--database-url", dsn+"&lock_timeout=300")
		done <- result{out, err}
	}()
	// Two waits for the dump's lock, one after the other: the down gave
	// up on the first and tried again.
	waiting := func() bool {
		var n int
		if err := watch.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks
			WHERE NOT granted AND relation = 'runbook_delegations'::regclass`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	for _, want := range []bool{true, false, true} {
		for deadline := time.Now().Add(20 * time.Second); waiting() != want; {
			select {
			case r := <-done:
				t.Fatalf("migrate down ended while the dump's transaction was open: %v\n%s", r.err, r.out)
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("migrate down's lock wait not %v within 20 s", want)
			}
		}
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("migrate down did not end after the dump's transaction")
	}
	if r.err != nil || !strings.Contains(r.out, "waiting for a table lock, trying again: ") ||
		!strings.Contains(r.out, "rolled back 00027_worker_reads_less.sql") {
		t.Fatalf("migrate down beside the dump: %v\n%s", r.err, r.out)
	}
	out, err := runCmd(t, "migrate", "status", "--database-url", dsn)
	if err != nil || !regexp.MustCompile(`00026_host_maintenance\.sql +applied`).MatchString(out) ||
		!regexp.MustCompile(`00027_worker_reads_less\.sql +pending`).MatchString(out) {
		t.Fatalf("status after the down: %v\n%s", err, out)
	}
}
