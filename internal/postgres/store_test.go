package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// storeEnv is a Store on a fresh migrated database, with the raw pool for
// setting up states the store's own methods do not produce.
type storeEnv struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *postgres.Store
}

func newStoreEnv(t *testing.T) *storeEnv {
	t.Helper()
	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &storeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool)}
}

// insert records a queued order of host by principal; mod may change it
// first.
func (e *storeEnv) insert(host, principal string, mod func(*order.Order)) *order.Order {
	e.t.Helper()
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
		Timeout: time.Minute, Principal: principal, Source: "rest"}
	if mod != nil {
		mod(o)
	}
	if prev, err := e.store.InsertOrder(e.ctx, o); err != nil || prev != nil {
		e.t.Fatalf("insert order: existing %v, %v", prev, err)
	}
	return o
}

// insertBefore is insert on a schema migrated down past 00023: today's
// insert statement names orders.waiter and orders.parent_run (00025), so
// the columns stand in for the insert and are gone again before the test
// migrates up.
func (e *storeEnv) insertBefore(host, principal string) *order.Order {
	e.t.Helper()
	e.exec(`ALTER TABLE orders ADD COLUMN waiter uuid, ADD COLUMN parent_run uuid`)
	o := e.insert(host, principal, nil)
	e.exec(`ALTER TABLE orders DROP COLUMN waiter, DROP COLUMN parent_run`)
	return o
}

// own makes worker the owner of host, which a claim requires.
func (e *storeEnv) own(host, worker string) {
	e.t.Helper()
	if _, _, err := e.store.TakeHost(e.ctx, host, "test", postgres.Owner{Instance: worker}); err != nil {
		e.t.Fatal(err)
	}
}

// claim claims id as worker and requires that it was claimed.
func (e *storeEnv) claim(id uuid.UUID, worker string) *order.Order {
	e.t.Helper()
	o, claimed, err := e.store.Claim(e.ctx, id, worker, 1)
	if err != nil || !claimed {
		e.t.Fatalf("claim %s: claimed %v, %v", id, claimed, err)
	}
	return o
}

func (e *storeEnv) get(id uuid.UUID) *order.Order {
	e.t.Helper()
	o, err := e.store.GetOrder(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// eventTypes is the order's history as its event types, oldest first.
func (e *storeEnv) eventTypes(id uuid.UUID) []string {
	e.t.Helper()
	evs, err := e.store.Events(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

// texts runs a query of one text column and returns its rows.
func (e *storeEnv) texts(sql string, args ...any) []string {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, sql, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// migratedDown returns a storeEnv on a new database migrated down to
// version, and the provider that migrates it up again.
func migratedDown(t *testing.T, version int64) (*storeEnv, *goose.Provider) {
	t.Helper()
	dsn := testenv.Postgres(t)
	store, pool := testenv.Store(t, dsn)
	e := &storeEnv{t: t, ctx: testenv.Context(t), pool: pool, store: store}
	p, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(); _ = db.Close() })
	if _, err := p.DownTo(e.ctx, version); err != nil {
		t.Fatalf("migrate down to %d: %v", version, err)
	}
	return e, p
}

func (e *storeEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func succeeded(out string) postgres.Finish {
	code := 0
	return postgres.Finish{Status: order.StatusSucceeded, Actor: "w1",
		Result: order.Result{ExitCode: &code, DurationMS: 5, Stdout: order.Output{Content: []byte(out), Bytes: int64(len(out))}}}
}

// TestClaim: only a queued order of a host the worker owns, whose deadline
// has not passed, is claimed (attempt+1, running, a "started" event); any
// other order comes back as it is, unclaimed.
func TestClaim(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(e *storeEnv, id uuid.UUID)
		deadline  time.Duration // relative expires_at; 0 for none
		worker    string
		claimed   bool
		wantErr   error
		wantState order.Status
	}{
		{name: "queued", worker: "w1", claimed: true, wantState: order.StatusRunning},
		{name: "queued with a future deadline", deadline: time.Hour, worker: "w1", claimed: true, wantState: order.StatusRunning},
		{name: "queued past its deadline", deadline: -time.Second, worker: "w1", wantState: order.StatusQueued},
		{name: "running (a redelivery)", setup: func(e *storeEnv, id uuid.UUID) { e.claim(id, "w1") },
			worker: "w1", wantState: order.StatusRunning},
		{name: "finished", setup: func(e *storeEnv, id uuid.UUID) {
			o := e.claim(id, "w1")
			if err := e.store.Complete(e.ctx, id, o.Attempt, succeeded("x")); err != nil {
				e.t.Fatal(err)
			}
		}, worker: "w1", wantState: order.StatusSucceeded},
		{name: "canceled", setup: func(e *storeEnv, id uuid.UUID) {
			if ok, err := e.store.Cancel(e.ctx, id, "admin", "test"); !ok || err != nil {
				e.t.Fatalf("cancel: %v %v", ok, err)
			}
		}, worker: "w1", wantState: order.StatusCanceled},
		{name: "worker does not own the host", worker: "w2", wantErr: postgres.ErrNotOwner, wantState: order.StatusQueued},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStoreEnv(t)
			e.own("h", "w1")
			o := e.insert("h", "p", func(o *order.Order) {
				if tt.deadline != 0 {
					at := time.Now().Add(tt.deadline)
					o.ExpiresAt = &at
				}
			})
			if tt.setup != nil {
				tt.setup(e, o.ID)
			}
			before := e.get(o.ID)
			got, claimed, err := e.store.Claim(e.ctx, o.ID, tt.worker, 42)
			if claimed != tt.claimed || !errors.Is(err, tt.wantErr) {
				t.Fatalf("claimed %v, err %v; want %v, %v", claimed, err, tt.claimed, tt.wantErr)
			}
			after := e.get(o.ID)
			if after.Status != tt.wantState {
				t.Fatalf("status %s, want %s", after.Status, tt.wantState)
			}
			if got != nil && got.Status != after.Status {
				t.Fatalf("Claim returned status %s, the row is %s", got.Status, after.Status)
			}
			started := slices.Index(e.eventTypes(o.ID), "started") >= 0
			if tt.claimed {
				if after.Attempt != before.Attempt+1 || after.Worker != tt.worker || after.StreamSeq != 42 || after.StartedAt == nil || !started {
					t.Fatalf("claimed row: attempt %d (was %d), worker %q, seq %d, started %v, event %v",
						after.Attempt, before.Attempt, after.Worker, after.StreamSeq, after.StartedAt, started)
				}
				return
			}
			if after.Attempt != before.Attempt || after.Worker != before.Worker {
				t.Fatalf("unclaimed order changed: attempt %d→%d, worker %q→%q", before.Attempt, after.Attempt, before.Worker, after.Worker)
			}
			if before.Status == order.StatusQueued && (started || after.StartedAt != nil) {
				t.Fatal("an unclaimed order shows as started")
			}
		})
	}
	t.Run("unknown order", func(t *testing.T) {
		e := newStoreEnv(t)
		e.own("h", "w1")
		if _, _, err := e.store.Claim(e.ctx, order.NewID(), "w1", 1); !errors.Is(err, order.ErrNotFound) {
			t.Fatalf("err %v, want ErrNotFound", err)
		}
	})
}

// TestSettlingIsFencedByOwnership: a worker that lost its host (cut off
// from NATS while it held the next order's message, then told by
// PostgreSQL that the order is running) must not settle the order its
// successor has just claimed: neither interrupt it nor requeue it. It gets
// ErrNotOwner, as a claim does, and the order stays its successor's.
func TestSettlingIsFencedByOwnership(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "old")
	o := e.insert("h", "p", func(o *order.Order) { o.Idempotent = true })
	e.own("h", "new")
	c := e.claim(o.ID, "new")
	if ok, err := e.store.InterruptAttempt(e.ctx, o.ID, c.Attempt, "old", "redelivered while running", nil); ok || !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("interrupt by the worker that lost the host: %v %v, want ErrNotOwner", ok, err)
	}
	if ok, err := e.store.Requeue(e.ctx, o.ID, c.Attempt, "old", "redelivered while running"); ok || err != nil {
		t.Errorf("requeue by the worker that lost the host: %v %v, want not requeued", ok, err)
	}
	if got := e.get(o.ID); got.Status != order.StatusRunning || got.Worker != "new" || got.Attempt != c.Attempt {
		t.Fatalf("the successor's order after the old worker's settling: %s by %s, attempt %d", got.Status, got.Worker, got.Attempt)
	}
	if ok, err := e.store.InterruptAttempt(e.ctx, o.ID, c.Attempt, "new", "test", nil); !ok || err != nil {
		t.Errorf("interrupt by the owner: %v %v", ok, err)
	}
}

// TestCompleteIsGuardedByAttempt: a result is written only for the
// attempt that is running; a stale attempt's result never overwrites a
// newer outcome, whether the order was settled meanwhile or is running
// again under a later attempt.
func TestCompleteIsGuardedByAttempt(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the attempt whose result is then written.
		setup      func(e *storeEnv, id uuid.UUID) int
		wantOK     bool
		wantStatus order.Status
		wantTries  int
	}{
		{"running attempt", func(e *storeEnv, id uuid.UUID) int { return e.claim(id, "w1").Attempt },
			true, order.StatusSucceeded, 1},
		{"interrupted meanwhile", func(e *storeEnv, id uuid.UUID) int {
			o := e.claim(id, "w1")
			e.own("h", "w2") // the successor
			if ok, err := e.store.InterruptAttempt(e.ctx, id, o.Attempt, "w2", "test", nil); !ok || err != nil {
				e.t.Fatalf("interrupt: %v %v", ok, err)
			}
			return o.Attempt
		}, false, order.StatusInterrupted, 1},
		{"requeued by the successor, not claimed yet", func(e *storeEnv, id uuid.UUID) int {
			o := e.claim(id, "w1")
			e.exec(`UPDATE orders SET idempotent = true WHERE id = $1`, id)
			e.own("h", "w2")
			if ok, err := e.store.Requeue(e.ctx, id, o.Attempt, "w2", "test"); !ok || err != nil {
				e.t.Fatalf("requeue: %v %v", ok, err)
			}
			return o.Attempt // the same attempt number as the queued order's
		}, false, order.StatusQueued, 1},
		{"stale attempt while attempt 2 runs", func(e *storeEnv, id uuid.UUID) int {
			o := e.claim(id, "w1")
			// Queued again (as an idempotent order is once) and claimed anew.
			e.exec(`UPDATE orders SET status = 'queued' WHERE id = $1`, id)
			if again := e.claim(id, "w1"); again.Attempt != 2 {
				e.t.Fatalf("second claim is attempt %d", again.Attempt)
			}
			return o.Attempt
		}, false, order.StatusRunning, 2},
		{"already finished", func(e *storeEnv, id uuid.UUID) int {
			o := e.claim(id, "w1")
			if err := e.store.Complete(e.ctx, id, o.Attempt, postgres.Finish{Status: order.StatusFailed, Actor: "w1"}); err != nil {
				e.t.Fatal(err)
			}
			return o.Attempt
		}, false, order.StatusFailed, 1},
		{"never claimed", func(*storeEnv, uuid.UUID) int { return 0 }, false, order.StatusQueued, 0},
		{"never claimed, written as attempt 1", func(*storeEnv, uuid.UUID) int { return 1 }, false, order.StatusQueued, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStoreEnv(t)
			e.own("h", "w1")
			o := e.insert("h", "p", nil)
			attempt := tt.setup(e, o.ID)
			before := e.get(o.ID)
			finishedBefore := slices.Index(e.eventTypes(o.ID), "finished") >= 0
			err := e.store.Complete(e.ctx, o.ID, attempt, succeeded("late result"))
			if tt.wantOK != (err == nil) || (!tt.wantOK && order.ErrorCode(err) != order.CodeConflict) {
				t.Fatalf("Complete: %v, want ok=%v (else a conflict)", err, tt.wantOK)
			}
			after := e.get(o.ID)
			if after.Status != tt.wantStatus || after.Attempt != tt.wantTries {
				t.Fatalf("status %s attempt %d, want %s attempt %d", after.Status, after.Attempt, tt.wantStatus, tt.wantTries)
			}
			finished := 0
			for _, ty := range e.eventTypes(o.ID) {
				if ty == "finished" {
					finished++
				}
			}
			if tt.wantOK {
				if after.Result == nil || string(after.Result.Stdout.Content) != "late result" || finished != 1 {
					t.Fatalf("result %+v, %d finished events", after.Result, finished)
				}
				return
			}
			if after.Result != nil && string(after.Result.Stdout.Content) == "late result" {
				t.Fatal("the refused result was written")
			}
			if !ptrEqual(before.FinishedAt, after.FinishedAt) || finished != map[bool]int{false: 0, true: 1}[finishedBefore] {
				t.Fatalf("a refused write changed finished_at (%v→%v) or added a finished event (%d)", before.FinishedAt, after.FinishedAt, finished)
			}
		})
	}
}

func ptrEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// TestTransitions: interrupt, cancel and expire move an order from the one
// status they apply to, with their event, and leave any other alone.
func TestTransitions(t *testing.T) {
	type transition func(s *postgres.Store, ctx context.Context, id uuid.UUID) (bool, error)
	interrupt := func(s *postgres.Store, ctx context.Context, id uuid.UUID) (bool, error) {
		return s.InterruptAttempt(ctx, id, 1, "w2", "worker vanished", nil) // a running order here is on its first attempt
	}
	cancel := func(s *postgres.Store, ctx context.Context, id uuid.UUID) (bool, error) {
		return s.Cancel(ctx, id, "admin", "no longer needed")
	}
	expire := func(s *postgres.Store, ctx context.Context, id uuid.UUID) (bool, error) {
		return s.Expire(ctx, id, "w1")
	}
	tests := []struct {
		name      string
		do        transition
		from      order.Status // queued, running or succeeded
		ok        bool
		want      order.Status
		wantEvent string
	}{
		{"interrupt running", interrupt, order.StatusRunning, true, order.StatusInterrupted, "interrupted"},
		{"interrupt queued", interrupt, order.StatusQueued, false, order.StatusQueued, ""},
		{"interrupt finished", interrupt, order.StatusSucceeded, false, order.StatusSucceeded, ""},
		{"cancel queued", cancel, order.StatusQueued, true, order.StatusCanceled, "canceled"},
		{"cancel running", cancel, order.StatusRunning, false, order.StatusRunning, ""},
		{"cancel finished", cancel, order.StatusSucceeded, false, order.StatusSucceeded, ""},
		{"expire queued", expire, order.StatusQueued, true, order.StatusExpired, "expired"},
		{"expire running", expire, order.StatusRunning, false, order.StatusRunning, ""},
		{"expire finished", expire, order.StatusSucceeded, false, order.StatusSucceeded, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStoreEnv(t)
			e.own("h", "w1")
			o := e.insert("h", "p", func(o *order.Order) { o.Env = map[string]string{"SECRET": "v"}; o.EnvNames = []string{"SECRET"} })
			if tt.from != order.StatusQueued {
				c := e.claim(o.ID, "w1")
				if tt.from == order.StatusSucceeded {
					if err := e.store.Complete(e.ctx, o.ID, c.Attempt, succeeded("x")); err != nil {
						t.Fatal(err)
					}
				}
			}
			e.own("h", "w2") // the successor, which interrupts
			// Past its deadline, so that expire applies: it checks the
			// deadline itself (TestExpireChecksTheDeadline).
			e.exec(`UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1`, o.ID)
			before := e.eventTypes(o.ID)
			ok, err := tt.do(e.store, e.ctx, o.ID)
			if err != nil || ok != tt.ok {
				t.Fatalf("ok %v, err %v; want %v", ok, err, tt.ok)
			}
			after := e.get(o.ID)
			if after.Status != tt.want {
				t.Fatalf("status %s, want %s", after.Status, tt.want)
			}
			evs := e.eventTypes(o.ID)
			if !tt.ok {
				if !slices.Equal(before, evs) {
					t.Fatalf("events %v → %v for a transition that did not apply", before, evs)
				}
				return
			}
			if evs[len(evs)-1] != tt.wantEvent || after.FinishedAt == nil || after.Env != nil {
				t.Fatalf("events %v, finished_at %v, env %v: want a %s event, a finish time and env erased",
					evs, after.FinishedAt, after.Env, tt.wantEvent)
			}
			// Terminal statuses never change again.
			for _, again := range []transition{interrupt, cancel, expire} {
				if ok, err := again(e.store, e.ctx, o.ID); ok || err != nil {
					t.Fatalf("a second transition applied to a %s order: %v %v", after.Status, ok, err)
				}
			}
		})
	}
	t.Run("unknown order", func(t *testing.T) {
		e := newStoreEnv(t)
		for _, do := range []transition{interrupt, cancel, expire} {
			if ok, err := do(e.store, e.ctx, order.NewID()); ok || err != nil {
				t.Fatalf("transition of an unknown order: %v %v", ok, err)
			}
		}
	})
}

// TestListOrdersCursors pages through orders with every filter, newest
// first and oldest first: the pages together are exactly the matching
// orders, in order, each once, and the last page has no cursor.
func TestListOrdersCursors(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h1", "w1")
	batch := order.NewID()
	var all []*order.Order
	for i := range 11 {
		host, principal := "h1", "alice"
		if i%3 == 0 {
			host = "h2"
		}
		if i%2 == 0 {
			principal = "bob"
		}
		o := e.insert(host, principal, func(o *order.Order) {
			if i >= 7 {
				o.BatchID = &batch
			}
		})
		all = append(all, e.get(o.ID))
	}
	// Two of h1's orders run, one of them finishes.
	e.claim(all[1].ID, "w1")
	c := e.claim(all[2].ID, "w1")
	if err := e.store.Complete(e.ctx, all[2].ID, c.Attempt, succeeded("x")); err != nil {
		t.Fatal(err)
	}
	for i, o := range all {
		all[i] = e.get(o.ID)
	}
	mid := all[5].SubmittedAt

	tests := []struct {
		name   string
		filter postgres.Filter
		match  func(o *order.Order) bool
	}{
		{"all", postgres.Filter{}, func(*order.Order) bool { return true }},
		{"host", postgres.Filter{Host: "h2"}, func(o *order.Order) bool { return o.Host == "h2" }},
		{"principal", postgres.Filter{Principal: "alice"}, func(o *order.Order) bool { return o.Principal == "alice" }},
		{"status", postgres.Filter{Status: []order.Status{order.StatusRunning, order.StatusSucceeded}},
			func(o *order.Order) bool { return o.Status == order.StatusRunning || o.Status == order.StatusSucceeded }},
		{"queued on a host", postgres.Filter{Host: "h1", Status: []order.Status{order.StatusQueued}},
			func(o *order.Order) bool { return o.Host == "h1" && o.Status == order.StatusQueued }},
		{"batch", postgres.Filter{Batch: &batch}, func(o *order.Order) bool { return o.BatchID != nil && *o.BatchID == batch }},
		{"since", postgres.Filter{Since: &mid}, func(o *order.Order) bool { return !o.SubmittedAt.Before(mid) }},
		{"until", postgres.Filter{Until: &mid}, func(o *order.Order) bool { return o.SubmittedAt.Before(mid) }},
		{"principal and host", postgres.Filter{Principal: "bob", Host: "h1"},
			func(o *order.Order) bool { return o.Principal == "bob" && o.Host == "h1" }},
		{"nothing matches", postgres.Filter{Principal: "carol"}, func(*order.Order) bool { return false }},
	}
	for _, tt := range tests {
		for _, oldestFirst := range []bool{false, true} {
			for _, limit := range []int{1, 2, 3, 50} {
				t.Run(fmt.Sprintf("%s/oldest_first=%v/limit=%d", tt.name, oldestFirst, limit), func(t *testing.T) {
					var want []uuid.UUID
					for _, o := range all {
						if tt.match(o) {
							want = append(want, o.ID)
						}
					}
					if !oldestFirst {
						slices.Reverse(want)
					}
					f := tt.filter
					f.Limit, f.OldestFirst = limit, oldestFirst
					var got []uuid.UUID
					for page := 0; ; page++ {
						if page > len(all) {
							t.Fatal("pagination does not end")
						}
						list, next, err := e.store.ListOrders(e.ctx, f)
						if err != nil {
							t.Fatal(err)
						}
						if len(list) > limit {
							t.Fatalf("page of %d orders, limit %d", len(list), limit)
						}
						for _, o := range list {
							got = append(got, o.ID)
						}
						if next == nil {
							break
						}
						if len(list) != limit || *next != list[len(list)-1].ID {
							t.Fatalf("cursor %s after a page of %d (limit %d) ending with %s", next, len(list), limit, list[len(list)-1].ID)
						}
						f.Cursor = next
					}
					if !slices.Equal(got, want) {
						t.Fatalf("pages gave %v, want %v", got, want)
					}
				})
			}
		}
	}
}

// TestExpireChecksTheDeadline: Expire trusted its caller that the
// order's deadline had passed and expired any queued order, one with a
// deadline an hour away or none at all. It now refuses those with a
// conflict, leaving them queued with no event, and still expires a due one.
func TestExpireChecksTheDeadline(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	later := e.insert("h", "p", func(o *order.Order) { at := time.Now().Add(time.Hour); o.ExpiresAt = &at })
	never := e.insert("h", "p", nil)
	for _, o := range []*order.Order{later, never} {
		ok, err := e.store.Expire(e.ctx, o.ID, "w1")
		if ok || order.ErrorCode(err) != order.CodeConflict || !strings.Contains(err.Error(), "its deadline has not passed") {
			t.Fatalf("expire an order not due (expires_at %v): ok %v, err %v", o.ExpiresAt, ok, err)
		}
		if got := e.get(o.ID); got.Status != order.StatusQueued || slices.Contains(e.eventTypes(o.ID), "expired") {
			t.Fatalf("an order not due is %s, events %v", got.Status, e.eventTypes(o.ID))
		}
	}
	e.exec(`UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1`, later.ID)
	if ok, err := e.store.Expire(e.ctx, later.ID, "w1"); !ok || err != nil {
		t.Fatalf("expire a due order: ok %v, err %v", ok, err)
	}
	if got := e.get(later.ID); got.Status != order.StatusExpired {
		t.Fatalf("a due order is %s after Expire", got.Status)
	}
}
