package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// insertOutcome is one InsertOrder call's answer.
type insertOutcome struct {
	o, prev *order.Order
	err     error
}

// lockedInserts counts the inserts of orders that wait for a lock.
const lockedInserts = `SELECT count(*) FROM pg_stat_activity
	WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO orders%'`

// grouped inserts first, and as many more as may be in flight with it,
// each on its own, held in PostgreSQL (the test keeps unpublished locked)
// until the orders of rest have all queued behind them in the store, and
// then lets them go: rest then go as one group. It returns first's answer
// and rest's, in rest's order.
func (e *storeEnv) grouped(first *order.Order, rest []*order.Order) (insertOutcome, []insertOutcome) {
	e.t.Helper()
	ctx := e.ctx
	release := e.holdInserts()
	insert := func(o *order.Order, out chan<- insertOutcome) {
		prev, err := e.store.InsertOrder(ctx, o)
		out <- insertOutcome{o, prev, err}
	}
	leaders := make(chan insertOutcome, postgres.MaxInsertsInFlight)
	go insert(first, leaders)
	for range postgres.MaxInsertsInFlight - 1 {
		go insert(plainOrder("gc-0", nil), leaders)
	}
	e.waitFor("the first inserts wait for the lock", func() bool { return e.count(lockedInserts) == postgres.MaxInsertsInFlight })
	outs := make([]chan insertOutcome, len(rest))
	for i, o := range rest {
		outs[i] = make(chan insertOutcome, 1)
		go insert(o, outs[i])
	}
	e.waitFor("the others queue behind them", func() bool { return e.store.QueuedInserts() == len(rest) })
	release()
	got := make([]insertOutcome, len(rest))
	for i := range outs {
		got[i] = <-outs[i]
	}
	var firstOut insertOutcome
	for range postgres.MaxInsertsInFlight {
		if l := <-leaders; l.o == first {
			firstOut = l
		} else if l.err != nil {
			e.t.Fatalf("an insert in flight: %v", l.err)
		}
	}
	return firstOut, got
}

// holdInserts makes the inserts of orders wait for a lock until release
// is called (or the test ends).
func (e *storeEnv) holdInserts() (release func()) {
	e.t.Helper()
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = tx.Rollback(context.WithoutCancel(e.ctx)) })
	if _, err := tx.Exec(e.ctx, `LOCK TABLE unpublished IN SHARE MODE`); err != nil {
		e.t.Fatal(err)
	}
	return func() {
		if err := tx.Commit(e.ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitFor polls cond until it holds, for up to 20 s.
func (e *storeEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("not within 20 s: %s", what)
		}
	}
}

// count runs q, which counts something.
func (e *storeEnv) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// xmins is the set of transactions that recorded the orders ids.
func (e *storeEnv) xmins(ids ...uuid.UUID) []string {
	e.t.Helper()
	return e.texts(`SELECT DISTINCT xmin::text FROM orders WHERE id = ANY($1)`, ids)
}

func plainOrder(host string, mod func(*order.Order)) *order.Order {
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
		Timeout: time.Minute, Principal: "alice", Source: "rest"}
	if mod != nil {
		mod(o)
	}
	return o
}

// TestGroupCommitAnswersEachCaller: the inserts that queued behind those
// in flight go as one transaction, and each caller gets its own answer: a
// new order recorded, a key already used answered with its first order,
// and of two with one new key, the first recorded and the second answered
// with it.
func TestGroupCommitAnswersEachCaller(t *testing.T) {
	e := newStoreEnv(t)
	old := e.insert("gc-1", "alice", func(o *order.Order) { o.IdempotencyKey = "gc-old" })
	keyed := func(key string) func(*order.Order) { return func(o *order.Order) { o.IdempotencyKey = key } }
	rest := []*order.Order{
		plainOrder("gc-1", nil),
		plainOrder("gc-1", keyed("gc-old")),
		plainOrder("gc-2", nil),
		plainOrder("gc-1", keyed("gc-new")),
		plainOrder("gc-1", keyed("gc-new")),
		plainOrder("gc-3", nil),
	}
	first, got := e.grouped(plainOrder("gc-1", nil), rest)
	if first.err != nil || first.prev != nil {
		t.Fatalf("the first insert: existing %v, %v", first.prev, first.err)
	}
	var recorded []uuid.UUID
	for i, g := range got {
		if g.err != nil {
			t.Fatalf("insert %d: %v", i, g.err)
		}
		if g.prev == nil {
			if g.o.SubmittedAt.IsZero() || g.o.Status != order.StatusQueued {
				t.Errorf("insert %d: recorded without its submitted_at or status: %v %q", i, g.o.SubmittedAt, g.o.Status)
			}
			recorded = append(recorded, g.o.ID)
		}
	}
	if got[1].prev == nil || got[1].prev.ID != old.ID {
		t.Errorf("the used key: answered %+v, want its first order %s", got[1].prev, old.ID)
	}
	newKey := got[3:5]
	if (newKey[0].prev == nil) == (newKey[1].prev == nil) {
		t.Fatalf("two with one new key: answered with %+v and %+v, want one recorded and the other answered with it", newKey[0].prev, newKey[1].prev)
	}
	for i, g := range newKey {
		if g.prev != nil && g.prev.ID != newKey[1-i].o.ID {
			t.Errorf("the new key's repeat answered with %s, want %s", g.prev.ID, newKey[1-i].o.ID)
		}
	}
	if len(recorded) != 4 {
		t.Fatalf("%d of the group recorded, want 4", len(recorded))
	}
	group, alone := e.xmins(recorded...), e.xmins(first.o.ID)
	if len(group) != 1 || group[0] == alone[0] {
		t.Errorf("the group was recorded by transactions %v (the first insert's %v), want one of its own", group, alone)
	}
	if n := len(e.texts(`SELECT id::text FROM unpublished WHERE id = ANY($1)`, recorded)); n != 4 {
		t.Errorf("%d unpublished marks for the group's 4 orders", n)
	}
}

// TestGroupCommitFailureIsTheCallersOwn: a statement refused in a group
// aborts the group's transaction; each of its orders then goes on its
// own, so the refusal is its caller's alone and the neighbours are
// recorded.
func TestGroupCommitFailureIsTheCallersOwn(t *testing.T) {
	limited := func(o *order.Order) {
		o.Kind, o.Command = order.KindAction, "action:gc-once"
		o.Action = &order.Action{Name: "gc-once", Params: map[string]string{},
			Limit: order.ActionLimit{Runs: 1, Per: time.Hour}}
	}
	for _, tc := range []struct {
		name    string
		failing func(first *order.Order) []*order.Order // two orders, of which one is refused
		want    order.Code
	}{
		{"an id already recorded", func(first *order.Order) []*order.Order {
			return []*order.Order{plainOrder("gc-1", func(o *order.Order) { o.ID = first.ID }), plainOrder("gc-1", nil)}
		}, order.CodeConflict},
		{"an action's limit", func(*order.Order) []*order.Order {
			return []*order.Order{plainOrder("gc-1", limited), plainOrder("gc-2", limited)}
		}, order.CodeRateLimited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStoreEnv(t)
			first := plainOrder("gc-1", nil)
			failing := tc.failing(first)
			rest := []*order.Order{plainOrder("gc-1", nil), failing[0], plainOrder("gc-2", nil), failing[1], plainOrder("gc-3", nil)}
			_, got := e.grouped(first, rest)
			refused := 0
			for i, g := range got {
				switch {
				case g.err == nil && g.prev == nil:
					if e.get(g.o.ID).Status != order.StatusQueued {
						t.Errorf("insert %d answered as recorded, not found queued", i)
					}
				case order.ErrorCode(g.err) == tc.want && (i == 1 || i == 3):
					refused++
				default:
					t.Errorf("insert %d: existing %v, %v", i, g.prev, g.err)
				}
			}
			if refused != 1 {
				t.Errorf("%d refused with %s, want 1", refused, tc.want)
			}
		})
	}
}

// TestGroupCommitCallerGivingUpLeavesTheGroup: a caller whose context
// ends while it waits for the next group is answered with its context's
// error and records nothing; the group goes on without it.
func TestGroupCommitCallerGivingUpLeavesTheGroup(t *testing.T) {
	e := newStoreEnv(t)
	release := e.holdInserts()
	first, quitter, stayer := plainOrder("gc-1", nil), plainOrder("gc-1", nil), plainOrder("gc-1", nil)
	firstErr := make(chan error, postgres.MaxInsertsInFlight)
	go func() { _, err := e.store.InsertOrder(e.ctx, first); firstErr <- err }()
	for range postgres.MaxInsertsInFlight - 1 {
		go func() { _, err := e.store.InsertOrder(e.ctx, plainOrder("gc-0", nil)); firstErr <- err }()
	}
	e.waitFor("the first inserts are in flight", func() bool { return e.count(lockedInserts) == postgres.MaxInsertsInFlight })
	qctx, cancel := context.WithCancel(e.ctx)
	quitErr, stayErr := make(chan error, 1), make(chan error, 1)
	go func() { _, err := e.store.InsertOrder(qctx, quitter); quitErr <- err }()
	go func() { _, err := e.store.InsertOrder(e.ctx, stayer); stayErr <- err }()
	e.waitFor("both queue", func() bool { return e.store.QueuedInserts() == 2 })
	cancel()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up: %v, want its context's error", err)
	}
	release()
	for range postgres.MaxInsertsInFlight {
		if err := <-firstErr; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-stayErr; err != nil {
		t.Fatal(err)
	}
	if n := e.count(`SELECT count(*) FROM orders WHERE id = $1`, quitter.ID); n != 0 {
		t.Errorf("the order of the caller that gave up was recorded")
	}
}
