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

// TestJobAfterTakeoverRecordsWhenATransactionOfAnotherTimelineIsInDoubt:
// the try's commit got no answer and a standby was promoted since (a
// failover): the promoted server never had the try's transaction if it
// had not reached it, and gives its id to a transaction of its own at
// once. pg_xact_status then answered "committed" for that one, and the
// check took the event for written: a job after a takeover left unseen.
// A check made on another timeline than its try records the event. The
// test names a transaction this server committed (its own, just now) as
// the try's, on a timeline that is not the server's.
func TestJobAfterTakeoverRecordsWhenATransactionOfAnotherTimelineIsInDoubt(t *testing.T) {
	e := newStoreEnv(t)
	o := e.insert("xid-2", "alice", nil)
	var xid, timeline string
	if err := e.pool.QueryRow(e.ctx, `SELECT pg_current_xact_id()::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`).Scan(&xid, &timeline); err != nil {
		t.Fatal(err)
	}
	detail := map[string]any{"job_id": 8, "job": "systemd:restart:x.service"}
	count := func() int {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'job_after_takeover'`, o.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// On the try's own timeline, "committed" is the try's: not written again.
	same := postgres.JobCheckOn(xid, timeline)
	if lost, err := e.store.JobAfterTakeover(e.ctx, &same, o.ID, 1, "w", detail); err != nil || !lost || count() != 0 {
		t.Fatalf("same timeline: lost %v, %v, %d events; want lost and none written", lost, err, count())
	}
	other := postgres.JobCheckOn(xid, "7FFFFFFF")
	if lost, err := e.store.JobAfterTakeover(e.ctx, &other, o.ID, 1, "w", detail); err != nil || !lost {
		t.Fatalf("another timeline: lost %v, %v; want the event recorded", lost, err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d job_after_takeover events after a check on another timeline, want 1", n)
	}
}
