package postgres_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// lockAction holds action's lock row until the returned transaction
// ends, and returns it with its backend's pid: every insert of a limited
// run of that action waits for it.
func (e *storeEnv) lockAction(action string) (pgx.Tx, uint32) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO action_locks (action) VALUES ($1) ON CONFLICT DO NOTHING`, action); err != nil {
		e.t.Fatal(err)
	}
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = tx.Rollback(e.ctx) })
	var pid uint32
	if err := tx.QueryRow(e.ctx, `SELECT pg_backend_pid() FROM action_locks WHERE action = $1 FOR UPDATE`, action).Scan(&pid); err != nil {
		e.t.Fatal(err)
	}
	return tx, pid
}

// limitedRun makes an order a run of action under a run limit, whose
// insert takes the action's lock.
func limitedRun(action string) func(*order.Order) {
	return func(o *order.Order) {
		o.Kind, o.Command = order.KindAction, "action:"+action
		o.Action = &order.Action{Name: action, Params: map[string]string{}, Limit: order.ActionLimit{Runs: 1000, Per: time.Hour}}
	}
}

// newCutEnv is a storeEnv whose store's connections go through a
// testenv.PGProxy; the test's own (locks, counts) do not.
func newCutEnv(t *testing.T) (*storeEnv, *testenv.PGProxy) {
	t.Helper()
	dsn := testenv.Postgres(t)
	ctx := testenv.Context(t)
	direct, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	viaDSN, proxy := testenv.StartPGProxy(t, dsn)
	via, err := postgres.Open(ctx, viaDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(via.Close)
	return &storeEnv{t: t, ctx: ctx, pool: direct, store: postgres.New(via)}, proxy
}

// blockedBy is the backend that waits for the lock backend holder holds,
// once there is exactly one and no insert queues in the store.
func (e *storeEnv) blockedBy(holder uint32) uint32 {
	e.t.Helper()
	var blocked uint32
	e.waitFor("an insert waits in PostgreSQL for the lock", func() bool {
		pids := e.texts(`SELECT pid::text FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, int64(holder))
		if len(pids) != 1 || e.store.QueuedInserts() != 0 {
			return false
		}
		pid, err := strconv.ParseUint(pids[0], 10, 32)
		blocked = uint32(pid)
		return err == nil
	})
	return blocked
}

// cutAfterCommit lets the transaction of backend pid, which waits for
// lock, commit with its answer held by proxy, then cuts its connection.
func (e *storeEnv) cutAfterCommit(proxy *testenv.PGProxy, pid uint32, lock pgx.Tx) {
	e.t.Helper()
	proxy.HoldAnswers(pid)
	if err := lock.Commit(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	e.waitFor("the insert commits, its answer held", func() bool {
		return proxy.AnswerWaiting(pid) &&
			e.count(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'idle'`, int64(pid)) == 1
	})
	proxy.Cut(pid)
}

// cutBeforeCommit terminates backend pid while it waits for lock, then
// releases lock.
func (e *storeEnv) cutBeforeCommit(pid uint32, lock pgx.Tx) {
	e.t.Helper()
	var ended bool
	if err := e.pool.QueryRow(e.ctx, `SELECT pg_terminate_backend($1, 10000)`, int64(pid)).Scan(&ended); err != nil || !ended {
		e.t.Fatalf("backend %d did not end: %v", pid, err)
	}
	if err := lock.Rollback(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

// TestGroupCommitConnectionCut: the connection of a group of inserts in
// flight breaks, before its commit (its backend terminated while the
// group waits in PostgreSQL for a lock) or after it (the answer cut on
// its way back, the transaction committed). Every caller with an
// idempotency key gets its order, recorded once: the store fences the
// backend, then looks the key up as the caller's retry would (after the
// commit a caller whose key an earlier order, or a neighbour, had used
// got a 503 and had to retry), and inserts once more when nothing holds
// it (before the commit every keyed caller got a 503). A caller without
// a key gets its order too: after the commit read back by id, before it
// inserted once more (it got a 503 that said nothing was recorded). None
// lost, none doubled. The test holds the group in PostgreSQL (an action's lock)
// until it cuts.
func TestGroupCommitConnectionCut(t *testing.T) {
	for _, committed := range []bool{false, true} {
		name := map[bool]string{false: "before the commit", true: "after the commit"}[committed]
		t.Run(name, func(t *testing.T) {
			e, proxy := newCutEnv(t)
			ctx := e.ctx
			keyed := func(key string) func(*order.Order) { return func(o *order.Order) { o.IdempotencyKey = key } }
			old := e.insert("cut-1", "alice", keyed("cut-old"))
			lockA, _ := e.lockAction("cut-a")
			lockB, pidB := e.lockAction("cut-b")

			insert := func(o *order.Order, out chan<- insertOutcome) {
				prev, err := e.store.InsertOrder(ctx, o)
				out <- insertOutcome{o, prev, err}
			}
			// The inserts in flight wait for action cut-a's lock.
			lone := make(chan insertOutcome, postgres.MaxInsertsInFlight)
			for range postgres.MaxInsertsInFlight {
				go insert(plainOrder("cut-0", limitedRun("cut-a")), lone)
			}
			e.waitFor("the first inserts wait for the lock", func() bool { return e.count(lockedInserts) == postgres.MaxInsertsInFlight })
			// The group queues behind them; its first statement will wait
			// for action cut-b's lock.
			group := []*order.Order{
				plainOrder("cut-1", func(o *order.Order) { limitedRun("cut-b")(o); o.IdempotencyKey = "cut-b" }),
				plainOrder("cut-1", keyed("cut-new")),
				plainOrder("cut-1", keyed("cut-old")),
				plainOrder("cut-1", keyed("cut-twice")),
				plainOrder("cut-1", keyed("cut-twice")),
				plainOrder("cut-3", nil),
			}
			outs := make([]chan insertOutcome, len(group))
			for i, o := range group {
				outs[i] = make(chan insertOutcome, 1)
				go insert(o, outs[i])
				if i == 0 {
					e.waitFor("the group's first queues", func() bool { return e.store.QueuedInserts() == 1 })
				}
			}
			e.waitFor("the group queues", func() bool { return e.store.QueuedInserts() == len(group) })
			if err := lockA.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			for range postgres.MaxInsertsInFlight {
				if l := <-lone; l.err != nil {
					t.Fatalf("an insert in flight: %v", l.err)
				}
			}
			groupPID := e.blockedBy(pidB)
			if committed {
				e.cutAfterCommit(proxy, groupPID, lockB)
			} else {
				e.cutBeforeCommit(groupPID, lockB)
			}

			got := make([]insertOutcome, len(group))
			for i := range outs {
				got[i] = <-outs[i]
			}
			// The order each key answers with: none may fail.
			answer := map[string]uuid.UUID{"cut-old": old.ID}
			for i, g := range got {
				t.Logf("insert %d (key %q): existing %v, %v", i, g.o.IdempotencyKey, g.prev != nil, g.err)
				key, mine := g.o.IdempotencyKey, g.o.ID
				switch {
				case g.err == nil && g.prev == nil:
					if n := e.count(`SELECT count(*) FROM orders WHERE id = $1`, g.o.ID); n != 1 {
						t.Fatalf("insert %d answered as recorded; %d rows", i, n)
					}
				case g.err == nil:
					mine = g.prev.ID
				default:
					t.Errorf("insert %d (key %q): %v, want its order", i, key, g.err)
					continue
				}
				if key == "" {
					continue
				}
				if a, ok := answer[key]; ok && a != mine {
					t.Errorf("key %s answered with orders %s and %s", key, a, mine)
				}
				answer[key] = mine
			}
			for key, id := range answer {
				if ids := e.texts(`SELECT id::text FROM orders WHERE principal = 'alice' AND idempotency_key = $1`, key); len(ids) != 1 || ids[0] != id.String() {
					t.Errorf("key %s: orders %v, answered with %s", key, ids, id)
				}
			}
		})
	}
}

// TestInsertConnectionCutKeyed: the connection of a lone keyed insert
// breaks, after its commit (its answer held by the proxy, then cut) and
// before it (its backend terminated while it waits for an action's
// lock). The caller gets what its retry would have got, without one: a
// retry of an order recorded earlier, cut after the commit, the first
// order (it got a 503: its own id was not recorded); a new key cut before
// the commit, its order, inserted once more after the fence (a 503);
// a keyless insert cut before its commit, its order, inserted once more
// (a 503 that said nothing was recorded).
func TestInsertConnectionCutKeyed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committed bool
		key       string // "lone-old" is recorded before
	}{
		{"after the commit, a retry", true, "lone-old"},
		{"before the commit, a new key", false, "lone-new"},
		{"before the commit, a retry", false, "lone-old"},
		{"before the commit, no key", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, proxy := newCutEnv(t)
			keyedRun := func(key string) func(*order.Order) {
				return func(o *order.Order) { limitedRun("lone")(o); o.IdempotencyKey = key }
			}
			old := e.insert("lone-1", "alice", keyedRun("lone-old"))
			lock, lockPID := e.lockAction("lone")
			o := plainOrder("lone-1", keyedRun(tc.key))
			out := make(chan insertOutcome, 1)
			go func() {
				prev, err := e.store.InsertOrder(e.ctx, o)
				out <- insertOutcome{o, prev, err}
			}()
			pid := e.blockedBy(lockPID)
			if tc.committed {
				e.cutAfterCommit(proxy, pid, lock)
			} else {
				e.cutBeforeCommit(pid, lock)
			}
			g := <-out
			t.Logf("existing %v, %v", g.prev != nil, g.err)
			want := o.ID
			switch {
			case g.err != nil:
				t.Fatalf("%v, want its order", g.err)
			case tc.key == "lone-old":
				want = old.ID
				if g.prev == nil || g.prev.ID != old.ID {
					t.Fatalf("answered %+v, want the first order %s", g.prev, old.ID)
				}
			case g.prev != nil:
				t.Fatalf("answered with order %s, want its own %s recorded", g.prev.ID, o.ID)
			}
			if tc.key == "" {
				if n := e.count(`SELECT count(*) FROM orders WHERE id = $1`, o.ID); n != 1 {
					t.Errorf("no key: %d rows of order %s, want 1", n, o.ID)
				}
			} else if ids := e.texts(`SELECT id::text FROM orders WHERE principal = 'alice' AND idempotency_key = $1`, tc.key); len(ids) != 1 || ids[0] != want.String() {
				t.Errorf("key %s: orders %v, want %s", tc.key, ids, want)
			}
			if n := e.count(`SELECT count(*) FROM unpublished WHERE id = $1`, want); n != 1 {
				t.Errorf("order %s: %d unpublished marks, want 1 (the reconciler's net)", want, n)
			}
		})
	}
}
