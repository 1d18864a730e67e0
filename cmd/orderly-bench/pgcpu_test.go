package main

import (
	"os"
	"strconv"
	"syscall"
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
		{"postgres: autovacuum worker ", pgAutovacuum},
		{"postgres: checkpointer", pgWriters},
		{"postgres: background writer", pgWriters},
		{"postgres: walwriter", pgWriters},
		{"postgres: checkpointer   ", pgWriters}, // the title's padding
		{"postgres: logical replication launcher", pgOthers},
		{"postgres: archiver", pgOthers},
		// Just forked, before its title: the postmaster's command line.
		{"/usr/lib/postgresql/15/bin/postgres -D /d/pg/data -k /d/pg/run -p 5432 -c fsync=on", pgOthers},
	} {
		if got := pgKindOf(c.title); got != c.want {
			t.Errorf("pgKindOf(%q) = %s, want %s", c.title, pgKindNames[got], pgKindNames[c.want])
		}
	}
}

// TestPGSplitCountsEachProcessOnce: between two samples a backend that
// lived through both counts what it spent between them, one that started
// counts all of its CPU, one that ended counts its last reading less what
// the first sample had of it, under its kind, what it spent after that
// reading is ended unseen, and the kinds add up to the total.
func TestPGSplitCountsEachProcessOnce(t *testing.T) {
	ms := time.Millisecond
	a := pgSample{ok: true, postmaster: 5 * ms, reaped: 100 * ms, ended: [pgKinds]time.Duration{pgAutovacuum: 7 * ms},
		procs: map[int]pgProc{
			10: {kind: pgClients, cpu: 40 * ms},    // lives on
			11: {kind: pgAutovacuum, cpu: 30 * ms}, // an autovacuum worker that ends
			12: {kind: pgWriters, cpu: 20 * ms},
		}}
	// 11 was last read at 45 ms and ended at 50; a worker 14 started and
	// ended between the samples, read once at 60 ms, ended at 64.
	b := pgSample{ok: true, postmaster: 6 * ms, reaped: 100*ms + 50*ms + 64*ms, ended: [pgKinds]time.Duration{pgAutovacuum: 7*ms + 45*ms + 60*ms},
		procs: map[int]pgProc{
			10: {kind: pgClients, cpu: 70 * ms},
			12: {kind: pgWriters, cpu: 25 * ms},
			13: {kind: pgClients, cpu: 8 * ms}, // a new connection
		}}
	by := pgSplit(a, b)
	want := [pgKinds]time.Duration{pgClients: 30*ms + 8*ms, pgAutovacuum: 15*ms + 60*ms, pgWriters: 5 * ms, pgOthers: 1 * ms, pgEnded: 5*ms + 4*ms}
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

// TestPGWatchKeepsAnEndedBackendsKind: a connection that keeps its
// backend busy for 300 ms of CPU and closes between two samples, as an
// autovacuum worker does within one of the bench's loads, counts under
// its kind (client backends), not under the reaped CPU of no kind; the
// cluster's background processes are found with theirs.
func TestPGWatchKeepsAnEndedBackendsKind(t *testing.T) {
	ctx := t.Context()
	dsn := testenv.Postgres(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
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
	w := watchPG(func() int { return pm }, 20*time.Millisecond)
	defer w.close()
	a := w.sample()
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
	// 300 ms of the backend's CPU at least (30 ticks of the clock /proc
	// counts in), then the connection closes and the backend ends.
	const busy = 300 * time.Millisecond
	for spent := time.Duration(0); spent < busy; spent = procCPU(backend) - a.procs[backend].cpu {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM generate_series(1, 2000000)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); procfs.Fields(backend) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("backend %d did not end within 10 s of its connection's close", backend)
		}
	}
	by := pgSplit(a, w.sample())
	if by[pgClients] < busy-50*time.Millisecond {
		t.Fatalf("client backends %v after a connection kept its backend busy %v and closed; split %s", by[pgClients], busy, describePG(by, 1))
	}
	t.Logf("split: %s", describePG(by, 1))
}

// procCPU is a process's CPU so far, 0 once it is gone.
func procCPU(pid int) time.Duration {
	f := procfs.Fields(pid)
	if f == nil {
		return 0
	}
	return ticks(f[11]) + ticks(f[12])
}

// TestWatcherCPUIsNotTheClients: the cluster watcher's polls run on a
// thread of their own and their CPU is taken out of the bench's own,
// which the reports give as the client's: counted in it, ten polls a
// second raised orderly/1's client figure by ~0.1 ms an order.
func TestWatcherCPUIsNotTheClients(t *testing.T) {
	before := watcherCPU.Load()
	w := watchPG(os.Getpid, time.Millisecond)
	testenv.WaitUntil(t, 30*time.Second, "the watcher's polls spend 30 ms of CPU", func() bool {
		return time.Duration(watcherCPU.Load()-before) >= 30*time.Millisecond
	})
	w.close()
	bench := machineAndBench().bench
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	all := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if watcher := time.Duration(watcherCPU.Load()); bench > all-watcher {
		t.Fatalf("the bench's own CPU %v counts the watcher's %v (the process's %v)", bench, watcher, all)
	}
}
