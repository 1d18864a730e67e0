package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// pgLockHolderName is the application_name of pgLockHolder's session.
const pgLockHolderName = "fault-lock-holder"

// pgLockHolder is a session of someone else's (an operator's psql, an
// auditor's report, a careless migration) with a transaction left open
// that holds a lock on orderly's tables.
type pgLockHolder struct {
	t    *testing.T
	conn *pgx.Conn
}

// holdPGLock opens a session on dsn, begins a transaction and runs sql in
// it; the lock it takes is held until release.
func holdPGLock(t *testing.T, dsn, sql string, args ...any) *pgLockHolder {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = pgLockHolderName
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &pgLockHolder{t: t, conn: conn}
	t.Cleanup(h.release)
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return h
}

// release ends the transaction (a rollback) and the session.
func (h *pgLockHolder) release() {
	if h.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.conn.Exec(ctx, "ROLLBACK"); err != nil {
		h.t.Errorf("release the lock: %v", err)
	}
	_ = h.conn.Close(ctx)
	h.conn = nil
}

// lockWaiters returns the application_name of every session waiting for
// a lock, one entry per session.
func lockWaiters(t *testing.T, s *faultStack) []string {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock'`)
	if err != nil {
		t.Fatalf("read pg_stat_activity: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read pg_stat_activity: %v", err)
	}
	return names
}

// lockHold is how long the locks of TestFaultsPostgresTableLocked and
// TestFaultsPostgresRowLocked are held: longer than an order's insert
// may wait before the API cuts it (two insert epochs of 15 s at the
// most), than the lease (2 s), and than the ack wait (30 s), past which
// JetStream delivers again the order whose claim waits.
const lockHold = 35 * time.Second

// lockCase is one lock a scenario holds.
type lockCase struct {
	name   string
	row    bool // lock h1's next order's row, not the table
	killed bool // SIGKILL h1's active worker while its claim waits
	// lockTimeout is the lock_timeout every process's database_url
	// sets ("": none, PostgreSQL's default, orderly's too).
	lockTimeout string
	// timeout is how long a client waits for an answer.
	timeout time.Duration
}

// TestFaultsPostgresTableLocked holds another session's `LOCK TABLE
// orders IN ACCESS EXCLUSIVE MODE`, in a transaction left open, for
// lockHold under the retrying load (every third order with ?wait=10),
// then releases it (a careless migration's ALTER TABLE or a VACUUM FULL
// waits for and holds the same lock). Every insert, claim, result and
// read of orders waits:
//
//   - table: with no lock_timeout a submission is answered within the
//     insert's bound (cut after two insert epochs of 15 s at the most,
//     its backend ended, its row looked for, 10 s at the most, behind
//     the same lock: 42 s); clients wait 50 s;
//   - table_lock_timeout: with lock_timeout=5000 in database_url, as
//     docs/reliability.md advises for the API, submissions are answered
//     503 after 5 s, nothing recorded, and the workers' statements
//     retry, saying why.
//
// Clients get a 202, a 200 or a 503 `unavailable`, never a 500; workers
// keep their hosts and go on where they stood; nothing is lost, run
// twice or out of order.
func TestFaultsPostgresTableLocked(t *testing.T) {
	for _, tc := range []lockCase{
		{name: "table", timeout: 50 * time.Second},
		{name: "table_lock_timeout", lockTimeout: "5000", timeout: 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) { runLockScenario(t, tc) })
	}
}

// TestFaultsPostgresRowLocked holds another session's `SELECT … FOR
// UPDATE` of h1's next queued order, in a transaction left open, while
// h1 runs the order before it, for lockHold under the retrying load,
// then releases it. That order's result and the next one's claim (one
// transaction) wait; the other host goes on:
//
//   - row: h1's worker waits, past the ack wait;
//   - row_holder_killed: with a standby for h1, h1's active worker is
//     SIGKILLed while its claim waits: the standby takes h1 over while
//     the dead worker's claim is still queued in PostgreSQL, and that
//     claim, once the lock goes, must be refused by the fence (it
//     committed, and the standby recorded the order interrupted
//     without its having run, before the claim took the row's lock
//     first: postgres.claimLockSQL).
//
// The contract holds, and the locked order runs (succeeds), in both.
func TestFaultsPostgresRowLocked(t *testing.T) {
	for _, tc := range []lockCase{
		{name: "row", row: true, timeout: 30 * time.Second},
		{name: "row_holder_killed", row: true, killed: true, timeout: 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) { runLockScenario(t, tc) })
	}
}

// runLockScenario runs the load with tc's lock held for lockHold, then
// checks the contract and every answer the clients got.
func runLockScenario(t *testing.T, tc lockCase) {
	s := newFaultStackConf(t, func(conf string) string {
		if tc.lockTimeout == "" {
			return conf
		}
		// database_url is the first line, a quoted URL with a query.
		return strings.Replace(conf, "\"\nnats:", "&lock_timeout="+tc.lockTimeout+"\"\nnats:", 1)
	})
	workers := map[string]int{"h1": 1, "h2": 1}
	if tc.killed {
		workers["h1"] = 2
	}
	shape := faultLoadShape{submitters: faultSubmitters, period: faultPeriod, retry: true, waitEvery: 3, timeout: tc.timeout}
	var began, released time.Time
	r := runFaultScenarioLoad(t, s, workers, shape, func(r *faultRun) {
		if !tc.row {
			// A worker must have a statement on orders while the table
			// is locked, whatever the load's timing: the load's orders
			// can all be done before the lock, and with it held no new
			// one is recorded. h1 runs an 8 s order across the lock's
			// start, so its result write waits for the lock.
			v := r.l.submit("v", "h1", false, "8")
			if !v.accepted() {
				t.Fatalf("victim order: HTTP %d %s", v.code, v.err)
			}
			r.l.waitStarted(t, "h1", v.tag, 30*time.Second)
			r.expect[v.tag] = "succeeded"
			began = time.Now()
			h := holdPGLock(t, s.pg.dsn(), "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
			r.s.note("orders locked ACCESS EXCLUSIVE")
			pause(t.Context(), lockHold)
			h.release()
			released = time.Now()
			r.s.note("orders unlocked")
			r.fault("orders unlocked", "h1")
			r.fault("orders unlocked", "h2")
			return
		}
		// h1 runs a 3 s order; the row of the order queued next
		// behind it is locked before it ends.
		v := r.l.submit("v", "h1", false, "3")
		if !v.accepted() {
			t.Fatalf("victim order: HTTP %d %s", v.code, v.err)
		}
		r.l.waitStarted(t, "h1", v.tag, 30*time.Second)
		r.expect[v.tag] = "succeeded"
		var next uuid.UUID
		var tag string
		waitUntil(t, 10*time.Second, "an order of h1 queued behind "+v.tag, func() bool {
			err := s.pool.QueryRow(t.Context(), `SELECT id, args[4] FROM orders WHERE host = 'h1' AND status = 'queued'
					ORDER BY submitted_at, id LIMIT 1`).Scan(&next, &tag)
			return err == nil
		})
		began = time.Now()
		h := holdPGLock(t, s.pg.dsn(), "SELECT id FROM orders WHERE id = $1 FOR UPDATE", next)
		r.s.note("order %s (%s) locked FOR UPDATE", tag, next)
		r.expect[tag] = "succeeded"
		waitUntil(t, 20*time.Second, "h1's worker waits for the row lock", func() bool {
			for _, n := range lockWaiters(t, s) {
				if n == "orderly-worker-h1" {
					return true
				}
			}
			return false
		})
		r.s.note("h1's claim of %s waits for the lock", tag)
		if tc.killed {
			var active *faultWorker
			for _, w := range r.s.liveWorkers("h1") {
				if strings.Contains(readLog(w.faultProc), "worker consuming") {
					active = w
				}
			}
			if active == nil {
				t.Fatal("no worker of h1 is consuming")
			}
			active.signal(syscall.SIGKILL)
			active.waitExit(10 * time.Second)
			r.s.note("%s SIGKILLed while its claim waits", active.name)
		}
		pause(t.Context(), lockHold-time.Since(began))
		h.release()
		released = time.Now()
		r.s.note("order %s unlocked", tag)
		r.fault("row unlocked", "h1")
	})
	checkOutageAnswers(t, r.l, began, released)
	if tc.lockTimeout == "" && !tc.killed {
		// A statement waits the whole lockHold: its worker says so
		// after 5 s, naming the holder, and once more when it is over
		// (worker/lockwait.go).
		named, ended := false, false
		s.mu.Lock()
		workers := append([]*faultWorker(nil), s.workers...)
		s.mu.Unlock()
		for _, w := range workers {
			for _, line := range strings.Split(readLog(w.faultProc), "\n") {
				if strings.Contains(line, "postgresql statement waits") && strings.Contains(line, pgLockHolderName) ||
					strings.Contains(line, "postgresql statement done after a wait") {
					t.Logf("%s: %s", w.name, line)
					named = named || strings.Contains(line, pgLockHolderName)
					ended = ended || strings.Contains(line, "done after a wait")
				}
			}
		}
		if !named || !ended {
			t.Errorf("no worker's log names %s as what its statement waits for (%v), or says the wait ended (%v)",
				pgLockHolderName, named, ended)
		}
	}
	if tc.lockTimeout != "" {
		said := false
		s.mu.Lock()
		workers := append([]*faultWorker(nil), s.workers...)
		s.mu.Unlock()
		for _, w := range workers {
			said = said || strings.Contains(readLog(w.faultProc), "canceling statement due to lock timeout")
		}
		if !said {
			t.Error("no worker's log says that its statements wait for a lock")
		}
	}
}
