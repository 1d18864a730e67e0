package postgres_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestAgesOnPostgresClock: the reconciler's and the lost-order search's
// "older than" are judged by PostgreSQL's clock, the one that wrote
// submitted_at. They took an instant from the API's clock, so an API an
// hour behind republished a failed publish an hour late, and one ahead
// treated orders whose publish was still under way as old.
func TestAgesOnPostgresClock(t *testing.T) {
	e := newStoreEnv(t)
	o := e.insert("ages", "alice", nil)
	age := func(secs int) {
		t.Helper()
		for _, q := range []string{`UPDATE orders SET submitted_at = now() - $2 * interval '1 second' WHERE id = $1`,
			`UPDATE unpublished SET submitted_at = now() - $2 * interval '1 second' WHERE id = $1`} {
			if _, err := e.pool.Exec(e.ctx, q, o.ID, secs); err != nil {
				t.Fatal(err)
			}
		}
	}
	unpublished := func() int {
		t.Helper()
		list, err := e.store.Unpublished(e.ctx, 10*time.Second, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	age(9)
	if n := unpublished(); n != 0 {
		t.Errorf("an order 9 s old by PostgreSQL's clock is unpublished for 10 s: %d", n)
	}
	age(11)
	if n := unpublished(); n != 1 {
		t.Errorf("an order 11 s old by PostgreSQL's clock: %d unpublished for 10 s, want 1", n)
	}

	if err := e.store.MarkPublished(e.ctx, []uuid.UUID{o.ID}); err != nil {
		t.Fatal(err)
	}
	queued := func() int {
		t.Helper()
		list, err := e.store.QueuedPublishedOlderThan(e.ctx, time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	age(59)
	if n := queued(); n != 0 {
		t.Errorf("an order 59 s old is queued for a minute: %d", n)
	}
	age(61)
	if n := queued(); n != 1 {
		t.Errorf("an order 61 s old: %d queued for a minute, want 1", n)
	}
}
