package postgres_test

import (
	"strconv"
	"testing"

	"github.com/orderly-run/orderly/internal/postgres"
)

// TestJobAfterTakeoverRecordsWhenTheDoubtfulTransactionWasNeverThisServers:
// the retry's check names a transaction this PostgreSQL never had (its id
// above the server's next: a failover to a standby that had not received
// the try's commit, a cluster restored from a backup). pg_xact_status
// raises "transaction ID … is in the future" for it, the same at every
// ask, so the worker's retry spun until it stopped and the event was
// never written. The check now records the event.
func TestJobAfterTakeoverRecordsWhenTheDoubtfulTransactionWasNeverThisServers(t *testing.T) {
	e := newStoreEnv(t)
	o := e.insert("xid-1", "alice", nil)
	var next uint64
	if err := e.pool.QueryRow(e.ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&next); err != nil {
		t.Fatal(err)
	}
	check := postgres.JobCheckOf(strconv.FormatUint(next+1_000_000, 10))
	detail := map[string]any{"job_id": 7, "job": "systemd:restart:x.service"}
	// The order is queued, not running under attempt 1 for w: lost.
	lost, err := e.store.JobAfterTakeover(e.ctx, &check, o.ID, 1, "w", detail)
	if err != nil || !lost {
		t.Fatalf("lost %v, %v; want the event recorded", lost, err)
	}
	var n int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'job_after_takeover'`, o.ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d job_after_takeover events, want 1", n)
	}
}
