package worker_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// handBackRace is a successor's store on which the host's previous
// worker, prev, claims order id just before the successor's claim reads
// it (a claim whose statement read the fence before the takeover and
// committed after the takeover's look for running orders), and hands it
// back unstarted just before the successor marks it interrupted (its
// start found the lease stale, or lost: execute). Both are the previous
// worker's own statements: its claim written by hand (the fence would
// refuse it now), its hand-back the store's Unclaim.
type handBackRace struct {
	worker.Store
	pool    *pgxpool.Pool
	t       *testing.T
	id      uuid.UUID
	prev    string
	claimed atomic.Bool
	handed  atomic.Bool
}

func (s *handBackRace) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	if id == s.id && s.claimed.CompareAndSwap(false, true) {
		if _, err := s.pool.Exec(ctx, `UPDATE orders SET status = 'running', attempt = attempt + 1, started_at = now(),
			stream_seq = $3, worker = $2 WHERE id = $1 AND status = 'queued'`, id, s.prev, int64(seq)); err != nil {
			s.t.Errorf("the previous worker's claim: %v", err)
		}
	}
	return s.Store.Claim(ctx, id, w, seq)
}

func (s *handBackRace) InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *postgres.PartialOutput) (bool, error) {
	if id == s.id && s.handed.CompareAndSwap(false, true) {
		if handed, err := s.Store.Unclaim(ctx, id, attempt, s.prev, "the host lease's last renewal is late"); err != nil || !handed {
			s.t.Errorf("the previous worker's hand-back: handed %v, %v", handed, err)
		}
	}
	return s.Store.InterruptAttempt(ctx, id, attempt, actor, reason, out)
}

// TestOrderHandedBackWhileItsSuccessorSettlesItRuns: the host's previous
// worker claimed an order while it still held the fence, and its claim
// committed after its successor's takeover had looked for running
// orders; the successor's consumer delivers the order, its claim reads
// it running under the previous worker, and settles it as a dead
// worker's attempt. Meanwhile the previous worker, its lease stale at
// the start, hands the order back unstarted (Unclaim is not fenced), and
// the successor's interrupt finds it no longer running. The successor
// acknowledged the message all the same: on the work queue that deleted
// it, and the order stayed queued for good, never run, while the orders
// after it ran (found by reading hA27's hand-back at the start,
// docs/decisions.md, hA28). It now judges the order again as it is: runs
// it, once, before the next.
func TestOrderHandedBackWhileItsSuccessorSettlesItRuns(t *testing.T) {
	e := newEnv(t)
	const host = "handback-race"
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	first := e.submit(host, "sh", "-c", `echo first >> "$1"`, "_", marker)
	race := &handBackRace{Store: e.store, pool: e.pool, t: t, id: first, prev: "previous-worker"}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, race, e.q, testenv.Logger(t))
	testenv.WaitUntil(t, 30*time.Second, "the successor settles the order handed back", race.handed.Load)
	next := e.submit(host, "sh", "-c", `echo next >> "$1"`, "_", marker)
	n := e.waitStatus(next, order.StatusSucceeded)

	o, err := e.store.GetOrder(t.Context(), first)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusSucceeded {
		t.Fatalf("the order handed back is %s at attempt %d while the order after it %s: lost, its message acknowledged", o.Status, o.Attempt, n.Status)
	}
	if o.Attempt != 2 {
		t.Errorf("the order handed back succeeded at attempt %d, want 2 (the previous worker's claim, then the successor's)", o.Attempt)
	}
	ran, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	if string(ran) != "first\nnext\n" {
		t.Errorf("the runs, in order: %q, want each order once, in order", ran)
	}
}
