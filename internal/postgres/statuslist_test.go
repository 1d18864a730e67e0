package postgres_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// A listing by terminal statuses alone (served from the orders' terminal
// events, migration 00010) pages through exactly the orders with those
// statuses, newest or oldest first, like any other listing.
func TestListByOutcome(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h1", "w1")
	past := time.Now().Add(-time.Second)
	byStatus := map[order.Status][]uuid.UUID{}
	var all []uuid.UUID // submission order
	finish := func(st order.Status) {
		o := e.insert("h1", "alice", nil)
		all = append(all, o.ID)
		byStatus[st] = append(byStatus[st], o.ID)
		switch st {
		case order.StatusCanceled:
			if ok, err := e.store.Cancel(e.ctx, o.ID, "alice", "no"); err != nil || !ok {
				t.Fatalf("cancel: %v %v", ok, err)
			}
		case order.StatusQueued:
		default:
			c := e.claim(o.ID, "w1")
			f := succeeded("")
			f.Status = st
			if err := e.store.Complete(e.ctx, o.ID, c.Attempt, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, st := range []order.Status{order.StatusSucceeded, order.StatusFailed, order.StatusSucceeded, order.StatusCanceled,
		order.StatusQueued, order.StatusFailed, order.StatusSucceeded, order.StatusKilled, order.StatusFailed} {
		finish(st)
	}
	expired := e.insert("h2", "alice", func(o *order.Order) { o.ExpiresAt = &past })
	if _, err := e.store.ExpireDue(e.ctx, 10); err != nil {
		t.Fatal(err)
	}
	all = append(all, expired.ID)
	byStatus[order.StatusExpired] = append(byStatus[order.StatusExpired], expired.ID)

	for _, tc := range []struct {
		statuses []order.Status
		oldest   bool
	}{
		{[]order.Status{order.StatusFailed}, false},
		{[]order.Status{order.StatusSucceeded, order.StatusFailed}, false},
		{[]order.Status{order.StatusSucceeded, order.StatusFailed, order.StatusFailed}, true},
		{[]order.Status{order.StatusCanceled, order.StatusExpired, order.StatusKilled}, false},
		{[]order.Status{order.StatusTimedOut}, false},
	} {
		var want []uuid.UUID
		for _, id := range all {
			for _, st := range tc.statuses {
				if slices.Contains(byStatus[st], id) {
					want = append(want, id)
					break
				}
			}
		}
		if !tc.oldest {
			slices.Reverse(want)
		}
		got := e.allPages(postgres.Filter{Status: tc.statuses, Limit: 2, OldestFirst: tc.oldest}, 10)
		if !slices.Equal(got, want) {
			t.Errorf("statuses %v (oldest first %v): %v, want %v", tc.statuses, tc.oldest, got, want)
		}
	}
}

// The listing by a terminal status reads order_events_outcome, so its cost
// is a page of that index whatever the history. Sequential scans are off on
// the store's only connection, so that the few rows here do not make a
// scan cheaper than the index; PostgreSQL's counters are read after
// asking that connection to flush them.
func TestListByOutcomeReadsTheOutcomeIndex(t *testing.T) {
	ctx := testenv.Context(t)
	store, pool := testenv.Store(t, testenv.Postgres(t)+"&pool_max_conns=1&enable_seqscan=off")
	e := &storeEnv{t: t, ctx: ctx, pool: pool, store: store}
	scans := func() (n int64) {
		e.counters(`SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'order_events_outcome'`, &n)
		return n
	}
	e.own("h1", "w1")
	for i := 0; i < 3; i++ {
		o := e.insert("h1", "alice", nil)
		c := e.claim(o.ID, "w1")
		if err := store.Complete(ctx, o.ID, c.Attempt, succeeded("")); err != nil {
			t.Fatal(err)
		}
	}
	before := scans()
	list, _, err := store.ListOrders(ctx, postgres.Filter{Status: []order.Status{order.StatusSucceeded, order.StatusFailed}, Limit: 2})
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %d orders, %v", len(list), err)
	}
	if after := scans(); after < before+2 {
		t.Fatalf("order_events_outcome scanned %d times for a listing of two statuses, want one range per status", after-before)
	}
}

// allPages lists the ids of every order f selects, following the cursor
// through at most pages pages.
func (e *storeEnv) allPages(f postgres.Filter, pages int) []uuid.UUID {
	e.t.Helper()
	var got []uuid.UUID
	for range pages {
		list, next, err := e.store.ListOrders(e.ctx, f)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, o := range list {
			got = append(got, o.ID)
		}
		if next == nil {
			break
		}
		f.Cursor = next
	}
	return got
}
