package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// stopExitBound is how long a worker asked to stop while PostgreSQL
// refuses its writes may take to exit: generous against the write's
// stop window (5 s, twice for a record then a result), well under the
// 30 s shutdown grace that a retry loop held before.
const stopExitBound = 15 * time.Second

// TestFaultsStopWhilePostgresRefuses stops (SIGTERM) an `orderly worker`
// while PostgreSQL refuses the write it retries, a trigger raising on
// it: the claim of an order, the result of one that ran, the process
// record of one running. The worker exited only once its shutdown grace
// (30 s) had passed, as hF11 saw with a rolled-back schema; it must
// exit within stopExitBound, say what it gave up, and leave the order
// as the contract says: a claim not made leaves the order queued for
// the next worker, which runs it once; a result not written is the
// successor's to settle (interrupted, not run again); a process not
// recorded is ended with its worker, not left behind.
func TestFaultsStopWhilePostgresRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trigger string // what PostgreSQL refuses
		sleep   string // the order's sleep after it writes its marker
		retried string // the worker's line while it retries
		want    string // the order's status once the successor settled it
	}{
		{"claim", `BEFORE UPDATE ON orders FOR EACH ROW WHEN (OLD.status = 'queued' AND NEW.status = 'running')`,
			"0", "claim order", "succeeded"},
		{"result", `BEFORE UPDATE ON orders FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')`,
			"3", "write result", "interrupted"},
		{"record", `BEFORE INSERT ON order_processes FOR EACH ROW`,
			"60", "record the order's process", "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFaultStack(t)
			ctx := t.Context()
			w := s.startWorker("h1")
			waitLogLine(t, w.faultProc, "worker consuming", 60*time.Second)
			exec := func(sql string) {
				t.Helper()
				if _, err := s.pool.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			exec(`CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$`)
			refuse := func() { exec(`CREATE TRIGGER refuse_for_test ` + tc.trigger + ` EXECUTE FUNCTION refuse_for_test()`) }
			tag := "stoprefused-" + uuid.NewString()[:8]
			marker := filepath.Join(s.dir, "marker")
			if tc.name != "result" {
				refuse()
			}
			body, _ := json.Marshal(map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 120,
				"args": []string{"-c", `echo "$1" >> "$2"; sleep "$3"`, "_", tag, marker, tc.sleep},
				"env":  map[string]string{faultOrderEnv: tag}})
			a := postKeyed(t, http.DefaultClient, s.apiURL+"/v1/orders", s.token, "", body)
			if a.code != http.StatusAccepted {
				t.Fatalf("submit: %d %s", a.code, a.body)
			}
			if tc.name == "result" {
				waitLogLine(t, w.faultProc, "order started", 30*time.Second)
				refuse()
			}
			waitLogLine(t, w.faultProc, tc.retried+"; retrying", 30*time.Second)

			w.signal(syscall.SIGTERM)
			s.note("SIGTERM to %s while PostgreSQL refuses its %s", w.name, tc.name)
			began := time.Now()
			if !w.waitExit(stopExitBound) {
				t.Fatalf("the worker did not exit within %s of SIGTERM while PostgreSQL refused its %s (shutdown grace 30 s)", stopExitBound, tc.name)
			}
			t.Logf("exited %.1f s after SIGTERM", time.Since(began).Seconds())
			if code := w.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			if !strings.Contains(readLog(w.faultProc), tc.retried+"; given up") {
				t.Errorf("the worker's log does not say it gave up (%q):\n%s", tc.retried+"; given up", logTail(w.log, 10))
			}
			if left := orderProcs(tag); len(left) > 0 {
				t.Errorf("the order's processes outlived their worker: %v", left)
			}

			exec(`DROP TRIGGER refuse_for_test ON ` + map[bool]string{true: "order_processes", false: "orders"}[tc.name == "record"])
			s.startWorker("h1")
			var status string
			waitUntil(t, 60*time.Second, "the order settled by the successor", func() bool {
				if err := s.pool.QueryRow(ctx, `SELECT status FROM orders WHERE id = $1`, a.id).Scan(&status); err != nil {
					t.Fatal(err)
				}
				return status != "queued" && status != "running"
			})
			if status != tc.want {
				t.Errorf("order status %s, want %s", status, tc.want)
			}
			b, _ := os.ReadFile(marker)
			if n := strings.Count(string(b), tag); n != 1 {
				t.Errorf("the order ran %d times, want once", n)
			}
		})
	}
}

// frozenStopBound is how long a worker or an API asked to stop while
// PostgreSQL is frozen may take to exit: generous against the 2 s its
// pool's close is given, well under the 15 s that pgx gives a canceled
// statement's connection to close and that the pool waited for.
const frozenStopBound = 10 * time.Second

// TestFaultsStopWhilePostgresFrozen stops (SIGTERM) an idle `orderly
// worker` and an `orderly api` while PostgreSQL is frozen (SIGSTOP, every
// backend). Each waited, after "shutting down", for its pool to close
// the connections whose statements the stop canceled: the worker 15.7 s
// (pgx's cancel request to a frozen server), the API 75 s (its
// background loops' statements on top). Each must exit within
// frozenStopBound, status 0.
func TestFaultsStopWhilePostgresFrozen(t *testing.T) {
	s := newFaultStack(t)
	w := s.startWorker("h1")
	waitLogLine(t, w.faultProc, "worker consuming", 60*time.Second)
	s.pg.signal(syscall.SIGSTOP)
	t.Cleanup(func() { s.pg.signal(syscall.SIGCONT) })
	s.note("postgres frozen")
	// Long enough for the API's and the worker's periodic statements to
	// be out in the frozen server.
	pause(t.Context(), 4*time.Second)
	for _, p := range []*faultProc{w.faultProc, s.api} {
		p.signal(syscall.SIGTERM)
	}
	s.note("SIGTERM to the worker and the API")
	began := time.Now()
	for _, p := range []*faultProc{w.faultProc, s.api} {
		if !p.waitExit(frozenStopBound - time.Since(began)) {
			t.Fatalf("%s did not exit within %s of SIGTERM while PostgreSQL was frozen:\n%s", p.name, frozenStopBound, logTail(p.log, 10))
		}
		t.Logf("%s exited %.1f s after SIGTERM", p.name, time.Since(began).Seconds())
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s: exit status %d, want 0", p.name, code)
		}
	}
}
