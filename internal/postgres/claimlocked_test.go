package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestClaimWaitingForARowLockIsFencedAfterTheWait: a claim that waits
// behind another session's lock on the order's row (an auditor's or an
// operator's SELECT … FOR UPDATE left open) while its worker loses the
// host to a successor (TakeHost commits meanwhile) must be refused by the
// fence once the lock goes: the host is no longer its worker's. In one
// statement the fence was read on the snapshot the claim began with, so
// the claim committed after the takeover, the order running under a
// worker that no longer owned its host (TestFaultsPostgresRowLocked/
// row_holder_killed: the successor then recorded it interrupted without
// its having run). Alone (Claim) and pipelined behind the previous
// order's result (CompleteAndClaim), whose result is written either way.
func TestClaimWaitingForARowLockIsFencedAfterTheWait(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		name := map[bool]string{false: "alone", true: "pipelined"}[pipelined]
		t.Run(name, func(t *testing.T) {
			e := newStoreEnv(t)
			e.own("h1", "w1")
			var prev *order.Order
			if pipelined {
				prev = e.insert("h1", "alice", nil)
				prev = e.claim(prev.ID, "w1")
			}
			next := e.insert("h1", "alice", nil)

			holder, err := e.pool.Begin(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = holder.Rollback(e.ctx) }()
			if _, err := holder.Exec(e.ctx, `SELECT id FROM orders WHERE id = $1 FOR UPDATE`, next.ID); err != nil {
				t.Fatal(err)
			}
			type outcome struct {
				claimed bool
				done    error
				err     error
			}
			out := make(chan outcome, 1)
			go func() {
				if !pipelined {
					_, claimed, err := e.store.Claim(e.ctx, next.ID, "w1", 2)
					out <- outcome{claimed: claimed, err: err}
					return
				}
				step, err := e.store.CompleteAndClaim(e.ctx, prev.ID, prev.Attempt, succeeded("x"), next.ID, "w1", 2)
				if err == nil && !step.Claimed {
					err = step.NextErr
				}
				out <- outcome{claimed: step.Claimed, done: step.Done, err: err}
			}()
			testenv.WaitUntil(t, 30*time.Second, "the claim waits for the row lock", func() bool {
				return len(e.texts(`SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`)) > 0
			})
			// The successor takes the host while the claim waits.
			e.own("h1", "w2")
			if err := holder.Rollback(e.ctx); err != nil {
				t.Fatal(err)
			}
			var got outcome
			select {
			case got = <-out:
			case <-time.After(30 * time.Second):
				t.Fatal("the claim did not end once the lock was released")
			}
			if got.claimed || !errors.Is(got.err, postgres.ErrNotOwner) {
				t.Errorf("claim by w1 after w2 took the host: claimed %v, %v; want refused, %v", got.claimed, got.err, postgres.ErrNotOwner)
			}
			if o := e.get(next.ID); o.Status != order.StatusQueued || o.Attempt != 0 {
				t.Errorf("the order after the refused claim: %s, attempt %d; want queued, attempt 0", o.Status, o.Attempt)
			}
			if pipelined {
				if got.done != nil {
					t.Errorf("the previous order's result: %v", got.done)
				}
				if o := e.get(prev.ID); o.Status != order.StatusSucceeded {
					t.Errorf("the previous order: %s, want succeeded", o.Status)
				}
			}
			// The successor claims it.
			e.claim(next.ID, "w2")
		})
	}
}
