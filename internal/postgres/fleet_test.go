package postgres_test

import (
	"testing"
	"time"
)

// TestQueueAgesAndUnpublishedBacklog checks the two reads behind the fleet
// gauges: the oldest queued order per host, and the orders not yet
// confirmed in the stream.
func TestQueueAgesAndUnpublishedBacklog(t *testing.T) {
	e := newStoreEnv(t)
	if ages, err := e.store.QueueAges(e.ctx); err != nil || len(ages) != 0 {
		t.Fatalf("empty database: ages %v, %v", ages, err)
	}
	if n, oldest, err := e.store.UnpublishedBacklog(e.ctx); err != nil || n != 0 || oldest != 0 {
		t.Fatalf("empty database: backlog %d, oldest %s, %v", n, oldest, err)
	}
	old := e.insert("h1", "p", nil)
	e.insert("h1", "p", nil)
	e.insert("h2", "p", nil)
	e.exec(`UPDATE orders SET submitted_at = now() - interval '10 minutes' WHERE id = $1`, old.ID)
	e.exec(`UPDATE unpublished SET submitted_at = now() - interval '10 minutes' WHERE id = $1`, old.ID)

	ages, err := e.store.QueueAges(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ages) != 2 || ages["h1"] < 10*time.Minute || ages["h1"] > 11*time.Minute || ages["h2"] > time.Minute {
		t.Errorf("queue ages %v, want h1 ≈ 10m and h2 < 1m", ages)
	}
	n, oldest, err := e.store.UnpublishedBacklog(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || oldest < 10*time.Minute || oldest > 11*time.Minute {
		t.Errorf("backlog %d, oldest %s; want 3, ≈ 10m", n, oldest)
	}
	e.exec(`UPDATE orders SET status = 'canceled', finished_at = now() WHERE host = 'h1'`)
	if ages, err := e.store.QueueAges(e.ctx); err != nil || len(ages) != 1 || ages["h2"] == 0 {
		t.Errorf("after h1's orders ended: ages %v, %v", ages, err)
	}
}
