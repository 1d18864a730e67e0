package main

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestBacklogCountsTheCommitsThatWrote: between two marks, three
// transactions that write and twenty that only read (as the bench's poll
// of the drain does, every 20 ms) are three commits that wrote, and the
// twenty reads are in the commits of pg_stat_database only. The backlog's
// "1.61 commits per order" was that figure (docs/decisions.md, "The
// backlog's commits: the worker's is one per order (hG26)").
func TestBacklogCountsTheCommitsThatWrote(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.Postgres(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE bench_marks (n int) WITH (autovacuum_enabled = false)`); err != nil {
		t.Fatal(err)
	}
	a := markWAL(ctx, dsn)
	if !a.ok {
		t.Fatal("no mark")
	}
	for i := range 3 {
		if _, err := conn.Exec(ctx, `INSERT INTO bench_marks VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM bench_marks`).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	b := markWAL(ctx, dsn)
	if got := writesPerOrder(a, b, 1); got != "3.00 that wrote" {
		t.Fatalf("three writes and twenty reads between the marks: %s, want 3.00 that wrote", got)
	}
}
