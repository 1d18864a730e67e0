package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// waitForLockWait waits until a session of this database waits for a
// lock in a statement holding query, as it does behind a lock the test
// holds: the interleaving the test needs, seen rather than slept for.
func waitForLockWait(t *testing.T, pool *pgxpool.Pool, query string) {
	t.Helper()
	ctx := testenv.Context(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND strpos(query, $1) > 0`, query).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no statement with %q waits for a lock after 30 s", query)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedTx begins a transaction that takes a lock with sql, to hold a
// request behind it; it is rolled back when the test ends, if the test
// did not, so that a failed test does not leave the lock held.
func lockedTx(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) pgx.Tx {
	t.Helper()
	ctx := testenv.Context(t)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	return tx
}

type answer struct {
	code int
	body []byte
}

// goDo is e.do in a goroutine, its answer on the channel.
func (e *apiEnv) goDo(as, method, path string, body any) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		code, b := e.do(as, method, path, body)
		ch <- answer{code, b}
	}()
	return ch
}

// TestForgetRacingMaintenanceOn: the forget read the host's maintenance,
// then deleted its row in a transaction of its own, so that a
// `--maintenance on` committed between the two was missed: the forget
// answered 204 and the host was forgotten in maintenance, which the
// forget refuses (hB14's rule, hA15's leftover). Now the check and the
// delete are one transaction under host_maintenance's lock, which a
// switch takes too. Each order is made to happen with real PostgreSQL
// locks the test holds, ten times each way:
//   - an `on` after the forget began, before its delete (the forget held
//     at the hosts row, as a worker taking the host holds it): the forget
//     is refused, 409 conflict naming the maintenance, the host kept;
//   - an `on` while the forget is past its check (held settling the
//     host's order it abandons): the switch waits for the forget and goes
//     in after it, as one sent after it would (the host forgotten, then
//     listed for its maintenance).
//
// Then both at once, free-running, 30 times: no 5xx, no deadlock, and
// the host's row is gone exactly when the forget said 204.
func TestForgetRacingMaintenanceOn(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	hostRows := func(host string) int {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM hosts WHERE host = $1`, host).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	for i := range 10 {
		host := fmt.Sprintf("race-on-%d", i)
		if err := e.store.TouchHost(ctx, host, "1.0", host+"/1"); err != nil {
			t.Fatal(err)
		}
		tx := lockedTx(t, e.pool, `SELECT FROM hosts WHERE host = $1 FOR UPDATE`, host)
		forgot := e.goDo("admin", http.MethodDelete, "/v1/hosts/"+host, nil)
		waitForLockWait(t, e.pool, "FROM hosts WHERE host = $1 FOR UPDATE")
		e.setMaintenance(host, true, "racing")
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		a := <-forgot
		wantError(t, a.code, a.body, http.StatusConflict, "conflict")
		if !strings.Contains(string(a.body), "host "+host+" is in maintenance (by admin since ") {
			t.Fatalf("forget %d: %s, want the maintenance named", i, a.body)
		}
		if n := hostRows(host); n != 1 {
			t.Fatalf("forget %d refused, yet %d rows of %s in hosts, want 1", i, n, host)
		}
	}

	for i := range 10 {
		host := fmt.Sprintf("race-forget-%d", i)
		if err := e.store.TouchHost(ctx, host, "1.0", host+"/1"); err != nil {
			t.Fatal(err)
		}
		// A forget that abandons the host's queued order settles it past
		// its maintenance check; the order's row, locked here, holds it
		// there.
		o := e.submit("alice", map[string]any{"host": host, "command": "true"}, "", http.StatusAccepted)
		tx := lockedTx(t, e.pool, `SELECT FROM orders WHERE id = $1 FOR UPDATE`, o.ID)
		forgot := e.goDo("admin", http.MethodDelete, "/v1/hosts/"+host+"?abandon=true", nil)
		waitForLockWait(t, e.pool, "UPDATE orders SET status = CASE status")
		on := e.goDo("admin", http.MethodPost, "/v1/hosts/"+host+"/maintenance", map[string]any{"reason": "racing"})
		waitForLockWait(t, e.pool, "INSERT INTO host_maintenance ")
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if a := <-forgot; a.code != http.StatusNoContent {
			t.Fatalf("forget %d, its check done before the switch: %d %s, want 204", i, a.code, a.body)
		}
		a := <-on
		var st maintenanceState
		if a.code != http.StatusOK || json.Unmarshal(a.body, &st) != nil || st.Maintenance == nil || st.Maintenance.Reason != "racing" {
			t.Fatalf("on %d, after the forget: %d %s, want 200 in maintenance", i, a.code, a.body)
		}
		if n := hostRows(host); n != 0 {
			t.Fatalf("forget %d answered 204, yet %d rows of %s in hosts", i, n, host)
		}
		code, b := e.do("admin", http.MethodGet, "/v1/hosts/"+host, nil)
		var h api.Host
		if code != http.StatusOK || json.Unmarshal(b, &h) != nil || h.Maintenance == nil {
			t.Fatalf("GET the host forgotten, then put in maintenance: %d %s, want it listed in maintenance", code, b)
		}
	}

	for i := range 30 {
		host := fmt.Sprintf("race-free-%d", i)
		if err := e.store.TouchHost(ctx, host, "1.0", host+"/1"); err != nil {
			t.Fatal(err)
		}
		forgot := e.goDo("admin", http.MethodDelete, "/v1/hosts/"+host, nil)
		on := e.goDo("admin", http.MethodPost, "/v1/hosts/"+host+"/maintenance", map[string]any{"reason": "racing"})
		f, o := <-forgot, <-on
		if o.code != http.StatusOK {
			t.Fatalf("on %d beside a forget: %d %s, want 200", i, o.code, o.body)
		}
		switch f.code {
		case http.StatusNoContent:
			if n := hostRows(host); n != 0 {
				t.Fatalf("forget %d answered 204, yet %d rows of %s in hosts", i, n, host)
			}
		case http.StatusConflict:
			wantError(t, f.code, f.body, http.StatusConflict, "conflict")
			if n := hostRows(host); n != 1 {
				t.Fatalf("forget %d refused, yet %d rows of %s in hosts, want 1", i, n, host)
			}
		default:
			t.Fatalf("forget %d beside an on: %d %s, want 204 or 409", i, f.code, f.body)
		}
	}
}
