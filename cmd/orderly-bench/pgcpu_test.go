package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/procfs"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPGKindOfReadsTheTitles: the titles PostgreSQL 15 gives the
// postmaster's children (ps on the bench's cluster), each to its kind.
func TestPGKindOfReadsTheTitles(t *testing.T) {
	for _, c := range []struct {
		title string
		want  pgKind
	}{
		{"postgres: postgres orderly [local] idle", pgClients},
		{"postgres: postgres orderly [local] UPDATE", pgClients},
		{"postgres: orderly orderly 10.0.0.7(51234) idle in transaction", pgClients},
		{"postgres: parallel worker for PID 4242", pgClients},
		{"postgres: autovacuum launcher", pgAutovacuum},
		{"postgres: autovacuum worker orderly", pgAutovacuum},
		{"postgres: checkpointer", pgWriters},
		{"postgres: background writer", pgWriters},
		{"postgres: walwriter", pgWriters},
		{"postgres: logical replication launcher", pgOthers},
		{"postgres: archiver", pgOthers},
		{"postgres: checkpointer   ", pgWriters}, // the title's padding
	} {
		if got := pgKindOf(c.title); got != c.want {
			t.Errorf("pgKindOf(%q) = %s, want %s", c.title, pgKindNames[got], pgKindNames[c.want])
		}
	}
}

// TestPGSplitCountsEachProcessOnce: between two samples a backend that
// lived through both counts what it spent between them, one that started
// counts all of its CPU, one that ended counts the reaped CPU less what
// the first sample had of it, and the kinds add up to the total.
func TestPGSplitCountsEachProcessOnce(t *testing.T) {
	ms := time.Millisecond
	a := pgSample{ok: true, postmaster: 5 * ms, reaped: 100 * ms, procs: map[int]pgProc{
		10: {pgClients, 40 * ms},    // lives on
		11: {pgAutovacuum, 30 * ms}, // an autovacuum worker that ends
		12: {pgWriters, 20 * ms},
	}}
	b := pgSample{ok: true, postmaster: 6 * ms, reaped: 100*ms + 50*ms, procs: map[int]pgProc{
		10: {pgClients, 70 * ms},
		12: {pgWriters, 25 * ms},
		13: {pgClients, 8 * ms}, // a new connection
	}}
	by := pgSplit(a, b)
	want := [pgKinds]time.Duration{pgClients: 30*ms + 8*ms, pgWriters: 5 * ms, pgOthers: 1 * ms, pgEnded: 50*ms - 30*ms}
	if by != want {
		t.Fatalf("split = %v, want %v", by, want)
	}
	var sum time.Duration
	for _, d := range by {
		sum += d
	}
	if sum != b.total()-a.total() {
		t.Fatalf("the kinds add up to %v, the total moved by %v", sum, b.total()-a.total())
	}
}

// TestPGSplitFollowsABackendsWork samples a real cluster around a query
// that keeps its backend busy: the CPU shows under client backends, and
// the cluster's background processes are found with their kinds.
func TestPGSplitFollowsABackendsWork(t *testing.T) {
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		t.Fatal(err)
	}
	f := procfs.Fields(backend)
	if f == nil {
		t.Fatalf("backend %d: no /proc entry", backend)
	}
	pm, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	a := samplePG(pm)
	if a.procs[backend].kind != pgClients {
		t.Fatalf("the test's own backend is %s", pgKindNames[a.procs[backend].kind])
	}
	kinds := map[pgKind]int{}
	for _, p := range a.procs {
		kinds[p.kind]++
	}
	if kinds[pgWriters] != 3 || kinds[pgAutovacuum] < 1 {
		t.Fatalf("the cluster's children by kind: %v; want the three writers and the autovacuum launcher", kinds)
	}
	// At least 300 ms of the backend's CPU: 30 ticks of the clock that
	// /proc counts in.
	for spent := time.Duration(0); spent < 300*time.Millisecond; spent = samplePG(pm).procs[backend].cpu - a.procs[backend].cpu {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM generate_series(1, 2000000)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	by := pgSplit(a, samplePG(pm))
	if by[pgClients] < 300*time.Millisecond {
		t.Fatalf("client backends %v after a query that kept one busy 300 ms; split %s", by[pgClients], describePG(by, 1))
	}
}
