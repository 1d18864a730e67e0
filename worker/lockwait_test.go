package worker_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

const (
	waitsMsg = "postgresql statement waits: the host's orders wait behind it"
	doneMsg  = "postgresql statement done after a wait"
)

// TestClaimWaitingForALockIsLoggedWithItsBlocker: a claim held behind
// another session's lock on the order's row (an operator's SELECT … FOR
// UPDATE left open) is told once, after StatementWaitWarn: one WARN that
// names the order, the host, the step and the session that holds the
// lock (its pid and application_name, read by the worker on another
// connection), and, once the lock goes and the order runs, one INFO with
// the whole wait. The quick statements of the orders before and after
// log neither. As orderly's own role, and as docs/sql.md's worker role,
// which pg_stat_activity shows another role's session's pid, user and
// application_name, not its state. Before, the worker said nothing.
func TestClaimWaitingForALockIsLoggedWithItsBlocker(t *testing.T) {
	for _, role := range []string{"owner", "orderly_worker"} {
		t.Run(role, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			store, pool := testenv.Store(t, dsn)
			e := &env{t: t, store: store,
				q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: 30 * time.Second, LeaseTTL: 2 * time.Second})}
			ws := store
			if role == "orderly_worker" {
				ws, _ = workerRole(t, pool, dsn)
			}
			const host, warnAfter = "lockwait", 2 * time.Second
			logs := &testenv.LogBuffer{}
			runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 30 * time.Second,
				ShutdownGrace: 5 * time.Second, StatementWaitWarn: warnAfter}, ws, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
			e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)

			o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
				Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
			if _, err := store.InsertOrder(t.Context(), o); err != nil {
				t.Fatal(err)
			}
			holder, err := pool.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(t.Context()) }()
			var holderPID int32
			if _, err := holder.Exec(t.Context(), `SET LOCAL application_name = 'lock-holder'`); err != nil {
				t.Fatal(err)
			}
			if err := holder.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&holderPID); err != nil {
				t.Fatal(err)
			}
			if _, err := holder.Exec(t.Context(), `SELECT id FROM orders WHERE id = $1 FOR UPDATE`, o.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
				t.Fatal(err)
			}

			var warn map[string]any
			testenv.WaitUntil(t, 30*time.Second, "the worker's warning that its claim waits", func() bool {
				ls := logLines(t, logs, waitsMsg)
				if len(ls) > 0 {
					warn = ls[0]
				}
				return warn != nil
			})
			if warn["level"] != "WARN" || warn["order_id"] != o.ID.String() || warn["host"] != host || warn["step"] != "claim order" ||
				warn["waited"].(float64) < float64(warnAfter) || warn["backend_pid"].(float64) == 0 {
				t.Fatalf("the warning: %v; want order %s, host %s, step claim order, a wait of %s at least and the backend", warn, o.ID, host, warnAfter)
			}
			t.Logf("the warning: %v", warn)
			blockers, _ := warn["blocked_by"].([]any)
			if len(blockers) != 1 {
				t.Fatalf("the warning names blockers %v, want the lock's holder (pid %d) alone", warn["blocked_by"], holderPID)
			}
			b := blockers[0].(map[string]any)
			if b["pid"] != float64(holderPID) || b["application_name"] != "lock-holder" || b["usename"] == "" {
				t.Fatalf("the warning names %v, want pid %d, application_name lock-holder and its user", b, holderPID)
			}
			if state, shown := b["state"]; (role == "owner") != shown || (shown && state != "idle in transaction") {
				t.Errorf("as %s, the holder's state is %v (shown %v): want idle in transaction to its own role only", role, state, shown)
			}
			// Past three thresholds, still waiting: no second warning.
			pid := int32(warn["backend_pid"].(float64))
			testenv.WaitUntil(t, 30*time.Second, "the claim to wait three thresholds", func() bool {
				var long bool
				err := pool.QueryRow(t.Context(), `SELECT now() - query_start > $2::interval FROM pg_stat_activity
					WHERE pid = $1 AND wait_event_type = 'Lock'`, pid, (3 * warnAfter).String()).Scan(&long)
				return err == nil && long
			})
			if err := holder.Rollback(t.Context()); err != nil {
				t.Fatal(err)
			}
			got := e.waitStatus(o.ID, order.StatusSucceeded)
			if got.Attempt != 1 {
				t.Errorf("the order that waited: attempt %d, want 1", got.Attempt)
			}
			var done map[string]any
			testenv.WaitUntil(t, 10*time.Second, "the worker's line that the wait ended", func() bool {
				if ls := logLines(t, logs, doneMsg); len(ls) > 0 {
					done = ls[0]
				}
				return done != nil
			})
			if done["level"] != "INFO" || done["order_id"] != o.ID.String() || done["step"] != "claim order" ||
				done["waited"].(float64) < float64(3*warnAfter) || done["failed"] != false {
				t.Errorf("the end of the wait: %v; want an INFO for order %s's claim, a wait of %s at least, not failed", done, o.ID, 3*warnAfter)
			}
			if strings.Index(logs.String(), doneMsg) < strings.Index(logs.String(), waitsMsg) {
				t.Errorf("the end of the wait was logged before its warning:\n%s", logs)
			}

			e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
			if w, d := len(logLines(t, logs, waitsMsg)), len(logLines(t, logs, doneMsg)); w != 1 || d != 1 {
				t.Errorf("%d warnings and %d ends of a wait, want 1 of each (the quick statements say nothing):\n%s", w, d, logs)
			}
		})
	}
}

// logLines returns the JSON log lines in logs whose msg is msg.
func logLines(t *testing.T, logs *testenv.LogBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Bytes())
		}
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}
