package worker_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestBacklogClaimsShareTheResultsCommits: a backlog of `true`s queued
// before its worker starts is run with every result but the last sharing
// its flushed commit with the next order's claim, one commit per order
// and the first claim's: a command done before the next delivery
// arrived committed its result alone, and the next claim on its own
// after it (21 – 37 % of a backlog's orders, docs/benchmarks.md, "The
// backlog's pipelined claims, counted"). NextWait of a minute makes the
// wait for the delivery certain; the stream's count of the host's
// messages still to deliver says when one follows.
func TestBacklogClaimsShareTheResultsCommits(t *testing.T) {
	e, pool := newDurableEnvAckWait(t, 30*time.Second)
	const n = 40
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.submit("pipe", "true")
	}
	runWorker(t, worker.Options{Host: "pipe", Heartbeat: 200 * time.Millisecond, AckWait: 30 * time.Second,
		ShutdownGrace: 5 * time.Second, RecordWait: time.Minute, NextWait: time.Minute}, e.store, e.q, testenv.Logger(t))
	for _, id := range ids {
		e.waitStatus(id, order.StatusSucceeded)
	}
	// The flushed commits that wrote the orders' rows after their
	// submission: the claims and the results, and their process records
	// written with the results.
	var commits, alone int
	if err := pool.QueryRow(t.Context(), `SELECT count(DISTINCT xid),
		count(DISTINCT xid) FILTER (WHERE NOT EXISTS (
			SELECT 1 FROM probe_writes c WHERE c.xid = p.xid AND c.order_id <> p.order_id))
		FROM probe_writes p WHERE sync = 'on' AND order_id = ANY($1)`, ids).Scan(&commits, &alone); err != nil {
		t.Fatal(err)
	}
	if commits != n+1 || alone != 2 {
		t.Fatalf("%d orders queued beforehand took %d flushed commits, %d of them for one order alone; want %d: the first claim, each result with the next claim, the last result (2 alone)",
			n, commits, alone, n+1)
	}
}
