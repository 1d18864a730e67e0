package postgres_test

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// recentFailuresByOrders is recent_failures as migration 00001 defined it,
// from orders alone: what the view must still answer.
const recentFailuresByOrders = `SELECT host, id, command, args, status, exit_code, signal, error, principal, finished_at
FROM orders
WHERE status IN ('failed','timed_out','killed','interrupted','rejected','expired')
  AND finished_at > now() - interval '7 days'`

// TestRecentFailuresRows: recent_failures (migration 00016 finds the
// orders from their terminal events) answers exactly what its definition
// on orders alone does, for orders ended by every one of the store's ways
// to end one: a worker's result, an interruption, an expiry, a cancel, a
// runbook run refused by the API and a forgotten host. An order submitted
// long before it failed is in it; one that failed 8 days ago is not.
func TestRecentFailuresRows(t *testing.T) {
	e := newStoreEnv(t)
	e.own("web-1", "w1")
	var want []uuid.UUID
	finish := func(st order.Status, mod func(*order.Order)) *order.Order {
		o := e.insert("web-1", "alice", mod)
		c := e.claim(o.ID, "w1")
		code := 1
		if err := e.store.Complete(e.ctx, o.ID, c.Attempt, postgres.Finish{Status: st, Actor: "w1",
			Result: order.Result{ExitCode: &code, Error: "x"}}); err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, st := range []order.Status{order.StatusFailed, order.StatusTimedOut, order.StatusKilled, order.StatusRejected} {
		want = append(want, finish(st, nil).ID)
	}
	finish(order.StatusSucceeded, nil)
	// Submitted 8 days ago (its id says so), failed now.
	old := finish(order.StatusFailed, func(o *order.Order) {
		var ms [8]byte // a UUIDv7's first 48 bits are its time in ms
		binary.BigEndian.PutUint64(ms[:], uint64(time.Now().Add(-8*24*time.Hour).UnixMilli()))
		copy(o.ID[:6], ms[2:])
	})
	e.exec(`UPDATE orders SET submitted_at = now() - interval '8 days' WHERE id = $1`, old.ID)
	want = append(want, old.ID)
	// Failed 8 days ago: its result and its event were written then.
	gone := finish(order.StatusFailed, nil)
	e.exec(`UPDATE orders SET finished_at = finished_at - interval '8 days' WHERE id = $1`, gone.ID)
	e.exec(`UPDATE order_events SET at = at - interval '8 days' WHERE order_id = $1 AND type = 'finished'`, gone.ID)

	interrupted := e.insert("web-1", "alice", nil)
	ci := e.claim(interrupted.ID, "w1")
	if ok, err := e.store.InterruptAttempt(e.ctx, interrupted.ID, ci.Attempt, "w1", "test", nil); err != nil || !ok {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	want = append(want, interrupted.ID)
	past := time.Now().Add(-time.Second)
	expired := e.insert("web-2", "alice", func(o *order.Order) { o.ExpiresAt = &past })
	if got, err := e.store.ExpireDue(e.ctx, 10); err != nil || len(got) != 1 {
		t.Fatalf("expire due: %v %v", got, err)
	}
	want = append(want, expired.ID)
	canceled := e.insert("web-2", "alice", nil)
	if ok, err := e.store.Cancel(e.ctx, canceled.ID, "alice", "no"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	refused := &order.Order{ID: order.NewID(), Kind: order.KindScript, Host: "web-2", Command: "runbook:deploy.md",
		Timeout: time.Minute, Principal: "alice", Source: "rest",
		Script: &order.Script{Runbook: "deploy.md", SHA256: "ab12"}}
	if err := e.store.RecordRefusedRun(e.ctx, refused, "RBAC check failed"); err != nil {
		t.Fatal(err)
	}
	want = append(want, refused.ID)
	e.own("web-3", "w3")
	abandoned := e.insert("web-3", "alice", nil)
	e.claim(abandoned.ID, "w3")
	e.insert("web-3", "alice", nil) // canceled with its host
	if _, _, ab, err := e.store.ForgetHost(e.ctx, "web-3", "admin"); err != nil || len(ab) != 2 {
		t.Fatalf("forget web-3: %d settled, %v", len(ab), err)
	}
	want = append(want, abandoned.ID)

	tx := auditorTx(t, e.ctx, e.pool)
	defer tx.Rollback(e.ctx)
	rows := func(q string) []string {
		t.Helper()
		r, err := tx.Query(e.ctx, q, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var out []string
		for r.Next() {
			vals, err := r.Values()
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(vals)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		slices.Sort(out)
		return out
	}
	view, byOrders := rows(`SELECT * FROM recent_failures`), rows(recentFailuresByOrders)
	if !slices.Equal(view, byOrders) {
		t.Errorf("recent_failures:\n%s\nits definition on orders:\n%s", strings.Join(view, "\n"), strings.Join(byOrders, "\n"))
	}
	var got, wantIDs []string
	for _, id := range rows(`SELECT id::text FROM recent_failures`) {
		var u []string
		if err := json.Unmarshal([]byte(id), &u); err != nil {
			t.Fatal(err)
		}
		got = append(got, u[0])
	}
	for _, id := range want {
		wantIDs = append(wantIDs, id.String())
	}
	slices.Sort(wantIDs)
	if !slices.Equal(got, wantIDs) {
		t.Errorf("recent_failures lists %v, want %v", got, wantIDs)
	}
}

// TestRecentFailuresReadsNoHistory: recent_failures reads the week's
// failures from their terminal events and each order by its id, never the
// whole of orders, whose size is the history (no index of orders has
// status or finished_at: migration 00009).
func TestRecentFailuresReadsNoHistory(t *testing.T) {
	e := newStoreEnv(t)
	// A month of history, failed orders every 10 s, and this week's few.
	e.exec(`WITH o AS (
	INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at, started_at, finished_at, attempt)
	SELECT gen_random_uuid(), 'web-' || i % 10, 'failed', 'false', 60000, 'alice', t, t, t, 1
	FROM (SELECT i, now() - interval '30 days' + i * interval '10 s' AS t FROM generate_series(1, 20000) i) s
	RETURNING id, finished_at)
	INSERT INTO order_events (order_id, at, type, status, actor) SELECT id, finished_at, 'finished', 'failed', 'w' FROM o`)
	e.own("web-1", "w1")
	for range 3 {
		o := e.insert("web-1", "alice", nil)
		c := e.claim(o.ID, "w1")
		if err := e.store.Complete(e.ctx, o.ID, c.Attempt, postgres.Finish{Status: order.StatusFailed, Actor: "w1"}); err != nil {
			t.Fatal(err)
		}
	}
	e.exec(`ANALYZE orders`)
	e.exec(`ANALYZE order_events`)
	tx := auditorTx(t, e.ctx, e.pool)
	defer tx.Rollback(e.ctx)
	scans := planScans(t, e.ctx, tx, `SELECT * FROM recent_failures`)
	for _, s := range scans {
		if strings.HasPrefix(s, "Seq Scan") {
			t.Errorf("recent_failures reads the history: %s (plan: %v)", s, scans)
		}
	}
	var n int
	if err := tx.QueryRow(e.ctx, `SELECT count(*) FROM recent_failures`).Scan(&n); err != nil || n != 3 {
		t.Errorf("recent_failures: %d rows (%v), want this week's 3", n, err)
	}
}
