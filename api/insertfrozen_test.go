package api_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// insertsEnded counts the intake's inserts that have returned.
type insertsEnded struct {
	intake.Store
	ended *atomic.Int64
}

func (s insertsEnded) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	defer s.ended.Add(1)
	return s.Store.InsertOrder(ctx, o)
}

// TestFrozenInsertOutlivesItsClientWithinItsBound: PostgreSQL's backend
// freezes (SIGSTOP) with an order's insert in it, and the client leaves.
// The insert runs on after its client (hJ7), but no longer for good: its
// connection is closed two epochs of postgres.InsertEpoch at the most
// after it was sent, the fence cannot end the frozen backend, and the
// intake answers the unknown outcome; the request's insert returns (it
// never did while the backend stayed stopped). Once the backend resumes,
// the order is recorded and queued by the reconciler, or absent: never
// recorded and left unpublished. The insert is held in PostgreSQL (the
// unpublished table locked by the test) until its backend is stopped.
func TestFrozenInsertOutlivesItsClientWithinItsBound(t *testing.T) {
	count := testenv.ShortInsertEpochs(t)
	dsn := testenv.Postgres(t)
	var ended atomic.Int64
	e := newAPIEnv(t, envOptions{dsn: dsn, intakeStore: func(s intake.Store) intake.Store { return insertsEnded{s, &ended} }})
	ctx := testenv.Context(t)

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
	client, leave := context.WithCancel(ctx)
	left := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(client, "POST", e.url+"/v1/orders", strings.NewReader(`{"host":"frozen-insert","command":"true"}`))
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		left <- err
	}()
	var pid int64
	testenv.WaitUntil(t, 20*time.Second, "the insert waits in PostgreSQL", func() bool {
		return e.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE $1 = ANY(pg_blocking_pids(pid)) AND query LIKE '%INSERT INTO orders%'`, holder).Scan(&pid) == nil
	})
	if err := syscall.Kill(int(pid), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(int(pid), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	count() // the epochs that cut the insert from now on, its backend stopped
	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	leave()
	if err := <-left; err == nil {
		t.Fatal("the request was answered with its backend stopped")
	}

	testenv.WaitUntil(t, 90*time.Second, "the insert of the client that left returns, its backend still stopped", func() bool {
		return ended.Load() == 1
	})
	resume()
	testenv.WaitUntil(t, 30*time.Second, "the backend resumes and ends", func() bool {
		var n int
		return e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n) == nil && n == 0
	})
	var recorded int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE host = 'frozen-insert'`).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	switch recorded {
	case 0:
	case 1:
		testenv.WaitUntil(t, 60*time.Second, "the reconciler queues the recorded order", func() bool {
			var n int
			return e.pool.QueryRow(ctx, `SELECT count(*) FROM unpublished u JOIN orders o USING (id)
				WHERE o.host = 'frozen-insert'`).Scan(&n) == nil && n == 0
		})
	default:
		t.Fatalf("%d orders recorded for one request", recorded)
	}
	t.Logf("recorded: %d", recorded)
}
