package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestSubmitCutAnswersAKeyedOrder: the connection of a keyed submission's
// insert breaks, and the API answers as the client's retry would, without
// that retry. After the commit (a retry of an order recorded earlier,
// whose own id was not recorded) it answered 503; now 200 after ?wait
// with the first order, finished, replayed, run once. Before the commit
// (a new key) it answered 503; now 200 with its own order, inserted once
// more after the fence, published, run once; and so without a key (it
// answered a 503 that said nothing was recorded). The intake's store goes through a proxy that holds and cuts
// one backend's connection; the insert waits in PostgreSQL (unpublished
// locked by the test) until the cut is set up.
func TestSubmitCutAnswersAKeyedOrder(t *testing.T) {
	dsn := testenv.Postgres(t)
	viaDSN, proxy := testenv.StartPGProxy(t, dsn)
	via, _ := testenv.Store(t, viaDSN)
	e := newAPIEnv(t, envOptions{dsn: dsn, intakeStore: func(intake.Store) intake.Store { return via }})
	ctx := testenv.Context(t)
	body := map[string]any{"host": "cut-api", "command": "true"}

	// hold makes the next insert of an order wait in PostgreSQL, and
	// returns its backend and the transaction that holds it.
	type held struct {
		lock pgx.Tx
		pid  uint32
	}
	hold := func(send func()) held {
		t.Helper()
		lock, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lock.Rollback(ctx) })
		var holder int64
		if err := lock.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		if _, err := lock.Exec(ctx, `LOCK TABLE unpublished IN SHARE MODE`); err != nil {
			t.Fatal(err)
		}
		send()
		var pid uint32
		testenv.WaitUntil(t, 20*time.Second, "the insert waits in PostgreSQL", func() bool {
			var pids []string
			rows, err := e.pool.Query(ctx, `SELECT pid::text FROM pg_stat_activity
				WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE '%INSERT INTO orders%'`, holder)
			if err == nil {
				pids, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil || len(pids) != 1 {
				return false
			}
			p, err := strconv.ParseUint(pids[0], 10, 32)
			pid = uint32(p)
			return err == nil
		})
		return held{lock, pid}
	}
	type answer struct {
		code     int
		body     []byte
		replayed string
	}
	post := func(query string, hdr ...string) chan answer {
		out := make(chan answer, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/orders"+query, strings.NewReader(`{"host":"cut-api","command":"true"}`))
			req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
			req.Header.Set("Content-Type", "application/json")
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				out <- answer{code: -1, body: []byte(err.Error())}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			out <- answer{resp.StatusCode, b, resp.Header.Get("Idempotent-Replayed")}
		}()
		return out
	}
	ranOnce := func(id string) {
		t.Helper()
		var attempt, started int
		if err := e.pool.QueryRow(ctx, `SELECT attempt, (SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'started')
			FROM orders WHERE id = $1`, id).Scan(&attempt, &started); err != nil || attempt != 1 || started != 1 {
			t.Errorf("order %s: attempt %d, %d started events (%v), want one run", id, attempt, started, err)
		}
	}

	// After the commit: a retry of a queued order (no worker yet).
	first := e.submit("alice", body, "", 202, "Idempotency-Key", "cut-old")
	var out chan answer
	h := hold(func() { out = post("?wait=30", "Idempotency-Key", "cut-old") })
	proxy.HoldAnswers(h.pid)
	if err := h.lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 20*time.Second, "the insert commits, its answer held", func() bool {
		var idle int
		_ = e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'idle'`, int64(h.pid)).Scan(&idle)
		return proxy.AnswerWaiting(h.pid) && idle == 1
	})
	proxy.Cut(h.pid)
	e.startWorker("cut-api") // the wait must outlast the order's run
	a := <-out
	var o api.Order
	if a.code != 200 || json.Unmarshal(a.body, &o) != nil || o.ID != first.ID || o.Status != "succeeded" || a.replayed != "true" {
		t.Fatalf("a retry cut after the commit: %d (replayed %q) %s, want 200 with order %s finished, replayed", a.code, a.replayed, a.body, first.ID)
	}
	ranOnce(first.ID.String())

	// Before the commit: a new key.
	h = hold(func() { out = post("?wait=30", "Idempotency-Key", "cut-new") })
	var ended bool
	if err := e.pool.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, int64(h.pid)).Scan(&ended); err != nil || !ended {
		t.Fatalf("backend %d did not end: %v", h.pid, err)
	}
	if err := h.lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	a = <-out
	if a.code != 200 || json.Unmarshal(a.body, &o) != nil || o.Status != "succeeded" || a.replayed != "" {
		t.Fatalf("a new key cut before the commit: %d (replayed %q) %s, want 200 with its own order finished", a.code, a.replayed, a.body)
	}
	var ids []string
	rows, err := e.pool.Query(ctx, `SELECT id::text FROM orders WHERE idempotency_key = 'cut-new'`)
	if err == nil {
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(ids) != 1 || ids[0] != o.ID.String() {
		t.Errorf("key cut-new: orders %v (%v), answered with %s", ids, err, o.ID)
	}
	ranOnce(o.ID.String())

	// Before the commit, no key: its own order, inserted once more (its
	// id keeps it from being recorded twice).
	h = hold(func() { out = post("?wait=30") })
	if err := e.pool.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, int64(h.pid)).Scan(&ended); err != nil || !ended {
		t.Fatalf("backend %d did not end: %v", h.pid, err)
	}
	if err := h.lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	a = <-out
	o = api.Order{}
	if a.code != 200 || json.Unmarshal(a.body, &o) != nil || o.Status != "succeeded" || a.replayed != "" {
		t.Fatalf("no key, cut before the commit: %d (replayed %q) %s, want 200 with its order finished", a.code, a.replayed, a.body)
	}
	ranOnce(o.ID.String())
}
