package worker_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestCleanStopIsTheHostsLastSeen checks that a worker stopping cleanly
// records its stop in the hosts table. It removes its heartbeat, so the
// hosts listing shows what PostgreSQL last recorded, which was up to a
// minute old (the worker touches the row every minute): a worker stopped
// a moment ago read "last seen 58s ago".
func TestCleanStopIsTheHostsLastSeen(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	ctx := testenv.Context(t)
	stop, _ := runWorker(t, worker.Options{Host: "stops-1", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, q, testenv.Logger(t))
	for deadline := time.Now().Add(20 * time.Second); ; {
		if on, err := q.HostOnline(ctx, "stops-1"); err == nil && on {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not come online")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// As if its last touch were 50 s ago.
	if _, err := pool.Exec(ctx, `UPDATE hosts SET last_seen = now() - interval '50 seconds' WHERE host = 'stops-1'`); err != nil {
		t.Fatal(err)
	}
	stop()
	rows, err := store.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var h *postgres.HostRow
	for i := range rows {
		if rows[i].Host == "stops-1" {
			h = &rows[i]
		}
	}
	if h == nil || time.Since(h.LastSeen) > 10*time.Second {
		t.Fatalf("hosts row after a clean stop: %+v, want last_seen at the stop", h)
	}
}
