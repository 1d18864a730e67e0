package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// markCounter is the intake's store with the batches of MarkPublished
// (the DELETEs of publish marks) recorded once each has returned.
type markCounter struct {
	intake.Store
	mu      sync.Mutex
	batches [][]uuid.UUID
}

func (c *markCounter) MarkPublished(ctx context.Context, ids []uuid.UUID) error {
	err := c.Store.MarkPublished(ctx, ids)
	c.mu.Lock()
	c.batches = append(c.batches, slices.Clone(ids))
	c.mu.Unlock()
	return err
}

func (c *markCounter) sent() [][]uuid.UUID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.batches)
}

// named counts the DELETEs' names of ids, one per id in each DELETE.
func (c *markCounter) named(ids []uuid.UUID) int {
	n := 0
	for _, b := range c.sent() {
		for _, id := range ids {
			if slices.Contains(b, id) {
				n++
			}
		}
	}
	return n
}

// awaitBatchOf waits for a DELETE of the intake's batch to name the mark
// of queued, an order nobody claims.
func (c *markCounter) awaitBatchOf(t *testing.T, queued uuid.UUID) {
	t.Helper()
	testenv.WaitUntil(t, 30*time.Second, "the queued order's mark deleted by the intake's batch", func() bool {
		return c.named([]uuid.UUID{queued}) > 0
	})
}

// noMarksLeft fails t when PostgreSQL still holds a publish mark of ids.
func noMarksLeft(t *testing.T, e *apiEnv, ids []uuid.UUID) {
	t.Helper()
	var left int
	if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM unpublished WHERE id = ANY($1)`, ids).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d publish marks left of %d orders, want none", left, len(ids))
	}
}

// TestWaitedOrdersNeedNoPublishMarkDelete: an order whose wait read it
// claimed leaves the intake's batched DELETE of publish marks (its claim
// deleted the mark), so a run of synchronous orders sends no DELETE for
// them at all; an order nobody claimed is still in the batch, and every
// mark is gone from PostgreSQL. The batch waits 3 s here (50 ms in
// production), so that every wait below ends before it is due.
func TestWaitedOrdersNeedNoPublishMarkDelete(t *testing.T) {
	counter := &markCounter{}
	e := newAPIEnv(t, envOptions{hosts: []string{"marks-1"}, markEvery: 3 * time.Second,
		intakeStore: func(s intake.Store) intake.Store { counter.Store = s; return counter }})

	var waited []uuid.UUID
	for range 5 {
		o := e.submit("alice", map[string]any{"host": "marks-1", "command": "true"}, "?wait=20", http.StatusOK)
		if o.Status != order.StatusSucceeded {
			t.Fatalf("order %s is %s", o.ID, o.Status)
		}
		waited = append(waited, o.ID)
	}
	// No worker serves marks-none: its order stays queued, and its mark
	// goes with the batch.
	queued := e.submit("alice", map[string]any{"host": "marks-none", "command": "true"}, "", http.StatusAccepted)
	counter.awaitBatchOf(t, queued.ID)
	for i, b := range counter.sent() {
		for _, id := range waited {
			if slices.Contains(b, id) {
				t.Errorf("DELETE %d of publish marks names order %s, whose wait read it finished: %d ids in it", i, id, len(b))
			}
		}
	}
	noMarksLeft(t, e, append(slices.Clone(waited), queued.ID))
}

// TestWaitedOrdersLongerThanTheBatchNeedNoPublishMarkDelete: a waited
// order that outlives the batch's wait (50 ms in production, and here)
// sent a DELETE of its publish mark while its wait went on, though its
// claim had deleted the mark; the waiter now settles the mark when its
// wait ends (intake.Mark), so a run of such orders sends none for them.
// A wait that ends with its order still queued (no worker serves
// marks-none) leaves the mark to the batch, which deletes it.
func TestWaitedOrdersLongerThanTheBatchNeedNoPublishMarkDelete(t *testing.T) {
	counter := &markCounter{}
	e := newAPIEnv(t, envOptions{hosts: []string{"marks-2"}, markEvery: 50 * time.Millisecond,
		intakeStore: func(s intake.Store) intake.Store { counter.Store = s; return counter }})

	var waited []uuid.UUID
	for range 4 {
		o := e.submit("alice", map[string]any{"host": "marks-2", "command": "sleep", "args": []string{"0.3"}}, "?wait=20", http.StatusOK)
		if o.Status != order.StatusSucceeded {
			t.Fatalf("order %s is %s", o.ID, o.Status)
		}
		waited = append(waited, o.ID)
	}
	queued := e.submit("alice", map[string]any{"host": "marks-none", "command": "true"}, "?wait=0.2", http.StatusAccepted)
	counter.awaitBatchOf(t, queued.ID)
	if sent := counter.named(waited); sent > 0 {
		t.Errorf("the intake's DELETEs of publish marks named %d of %d orders whose waits read them finished, want none", sent, len(waited))
	}
	noMarksLeft(t, e, append(slices.Clone(waited), queued.ID))
}

// noReconcile is the intake's store with no order for the reconciler to
// republish.
type noReconcile struct{ intake.Store }

func (noReconcile) Unpublished(context.Context, time.Duration, int) ([]*order.Order, error) {
	return nil, nil
}

// TestAWaitedOrderLeftQueuedHasItsMarkDeletedDuringTheWait: the waiter
// of an order that stays queued (no worker serves marks-idle: a host
// busy with a long order is the same) hands its publish mark to the
// intake's batch at its first poll, not at the wait's end. Held for the
// whole wait (up to compat.vigrid.max_wait, 5 min), the mark of an order
// that was published fine made it one the reconciler republishes after
// reconcile's 10 s, and the unpublished gauges counted it.
func TestAWaitedOrderLeftQueuedHasItsMarkDeletedDuringTheWait(t *testing.T) {
	const host, wait = "marks-idle", 28 // the wait outlasts the test's deadline below
	// The reconciler is kept from the mark (it finds none to republish):
	// only the intake's batch deletes it.
	e := newAPIEnv(t, envOptions{markEvery: 50 * time.Millisecond,
		intakeStore: func(s intake.Store) intake.Store { return noReconcile{s} }})
	ctx, cancel := context.WithCancel(testenv.Context(t))
	defer cancel()
	b, err := json.Marshal(map[string]any{"host": host, "command": "true"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/orders?wait="+strconv.Itoa(wait), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	count := func(sql string) int {
		var n int
		if err := e.pool.QueryRow(ctx, sql, host).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.WaitUntil(t, 20*time.Second, "the order recorded", func() bool {
		return count(`SELECT count(*) FROM orders WHERE host = $1`) == 1
	})
	testenv.WaitUntil(t, 20*time.Second, "the queued order's publish mark deleted while its wait goes on", func() bool {
		return count(`SELECT count(*) FROM unpublished u JOIN orders o USING (id) WHERE o.host = $1`) == 0
	})
	select {
	case err := <-done:
		t.Fatalf("the wait ended before the test's checks (%v): it must outlast them", err)
	default:
	}
	if n := count(`SELECT count(*) FROM orders WHERE host = $1 AND status = 'queued'`); n != 1 {
		t.Fatalf("%d queued orders on %s, want the one still waited for", n, host)
	}
	cancel()
	<-done
}
