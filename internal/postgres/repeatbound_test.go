package postgres_test

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestKeyUsedLookupFrozenIsCut: a keyed insert finds its key used, and
// PostgreSQL freezes (SIGSTOP) the backend of the lookup that follows,
// the first order's. The insert, whose context never ends (the
// intake's, once its client left), returns with the backend still
// stopped: the lookup is bounded as the insert is, two epochs of
// postgres.InsertEpoch at the most, and answers unavailable. Before, it
// waited for good. The lookup is held where it must be, not hoped for:
// the insert waits for an action's lock with a transaction's request
// for the whole orders table queued behind it, so the table lock is
// granted the moment the insert ends and the lookup, the next statement
// on orders, waits for it; stopped there, it never answers.
func TestKeyUsedLookupFrozenIsCut(t *testing.T) {
	count := testenv.ShortInsertEpochs(t)
	e, _ := newCutEnv(t)
	keyedRun := func(o *order.Order) { limitedRun("repeat")(o); o.IdempotencyKey = "repeat-key" }
	first := e.insert("repeat-1", "alice", keyedRun)

	lock, lockPID := e.lockAction("repeat")
	retry := plainOrder("repeat-1", keyedRun)
	out := make(chan insertOutcome, 1)
	go func() {
		prev, err := e.store.InsertOrder(context.WithoutCancel(e.ctx), retry)
		out <- insertOutcome{retry, prev, err}
	}()
	e.blockedBy(lockPID)

	// Queued behind the insert, which holds orders while it waits; the
	// test's own statements stay off orders until it is released.
	table, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = table.Rollback(e.ctx) })
	var tablePID uint32
	if err := table.QueryRow(e.ctx, `SELECT pg_backend_pid()`).Scan(&tablePID); err != nil {
		t.Fatal(err)
	}
	locked := make(chan error, 1)
	go func() {
		_, err := table.Exec(e.ctx, `LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`)
		locked <- err
	}()
	e.waitFor("the table lock queues behind the insert", func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, int64(tablePID)) == 1
	})
	if err := lock.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	var lookupPID uint32
	e.waitFor("the lookup of the used key waits for the table", func() bool {
		pids := e.texts(`SELECT pid::text FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> $1
			AND query LIKE '%request_sha256 FROM orders WHERE principal=$1 AND idempotency_key=$2%'`, int64(tablePID))
		if len(pids) != 1 {
			return false
		}
		pid, err := strconv.ParseUint(pids[0], 10, 32)
		lookupPID = uint32(pid)
		return err == nil
	})
	if err := syscall.Kill(int(lookupPID), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(int(lookupPID), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	count() // the epochs that cut the lookup from now on, its backend stopped
	if err := <-locked; err != nil {
		t.Fatal(err)
	}
	if err := table.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}

	var got insertOutcome
	testenv.WaitUntil(t, 90*time.Second, "the insert returns, the lookup's backend still stopped", func() bool {
		select {
		case got = <-out:
			return true
		default:
			return false
		}
	})
	resume()
	t.Logf("existing %v, %v", got.prev != nil, got.err)
	if got.prev != nil || order.ErrorCode(got.err) != order.CodeUnavailable {
		t.Errorf("existing %v, %v, want unavailable", got.prev, got.err)
	}
	if ids := e.texts(`SELECT id::text FROM orders WHERE principal = 'alice' AND idempotency_key = 'repeat-key'`); len(ids) != 1 || ids[0] != first.ID.String() {
		t.Errorf("the key holds orders %v, want the first, %s", ids, first.ID)
	}
	// The retry the client sends next finds the first order.
	again := plainOrder("repeat-1", keyedRun)
	if prev, err := e.store.InsertOrder(e.ctx, again); err != nil || prev == nil || prev.ID != first.ID {
		t.Errorf("the retry: existing %v, %v, want the first order %s", prev, err, first.ID)
	}
}
