package postgres_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestGroupCommitFrozenIsCut: the backend of a group of inserts in
// flight freezes (SIGSTOP) with the group in it. Every caller's insert,
// whose context never ends (the intake's, once its client left), returns
// with the backend still stopped: its connection is closed two epochs of
// postgres.InsertEpoch at the most after the group was sent, the fence
// cannot end the frozen backend, and each caller gets an unknown
// outcome. Once the backend resumes, each order is absent or recorded
// once. The inserts never returned while the backend stayed stopped. The
// group is held in PostgreSQL (an action's lock) until its backend is
// stopped, and the epochs count only from then (testenv.ShortInsertEpochs):
// counted from the start, a loaded machine let the group be cut before
// the test found it, and the test waited for a backend that was gone.
func TestGroupCommitFrozenIsCut(t *testing.T) {
	count := testenv.ShortInsertEpochs(t)
	e, _ := newCutEnv(t)
	lockA, _ := e.lockAction("frozen-a")
	lockB, pidB := e.lockAction("frozen-b")
	never := context.WithoutCancel(e.ctx)
	insert := func(o *order.Order, out chan<- insertOutcome) {
		prev, err := e.store.InsertOrder(never, o)
		out <- insertOutcome{o, prev, err}
	}
	lone := make(chan insertOutcome, postgres.MaxInsertsInFlight)
	for range postgres.MaxInsertsInFlight {
		go insert(plainOrder("frozen-0", limitedRun("frozen-a")), lone)
	}
	e.waitFor("the first inserts wait for the lock", func() bool { return e.count(lockedInserts) == postgres.MaxInsertsInFlight })
	// The group queues behind them; its first statement will wait for
	// action frozen-b's lock.
	group := []*order.Order{plainOrder("frozen-1", limitedRun("frozen-b")), plainOrder("frozen-1", nil), plainOrder("frozen-1", nil)}
	out := make(chan insertOutcome, len(group))
	for i, o := range group {
		go insert(o, out)
		if i == 0 {
			e.waitFor("the group's first queues", func() bool { return e.store.QueuedInserts() == 1 })
		}
	}
	e.waitFor("the group queues", func() bool { return e.store.QueuedInserts() == len(group) })
	if err := lockA.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	for range postgres.MaxInsertsInFlight {
		if l := <-lone; l.err != nil {
			t.Fatalf("an insert in flight: %v", l.err)
		}
	}
	groupPID := e.blockedBy(pidB)
	if err := syscall.Kill(int(groupPID), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(int(groupPID), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	count() // the epochs that cut the group from now on, its backend stopped
	if err := lockB.Commit(e.ctx); err != nil {
		t.Fatal(err)
	}
	var got []insertOutcome
	testenv.WaitUntil(t, 90*time.Second, "every insert of the group returns, its backend still stopped", func() bool {
		for {
			select {
			case g := <-out:
				got = append(got, g)
			default:
				return len(got) == len(group)
			}
		}
	})
	resume()
	e.waitFor("the backend resumes and ends", func() bool {
		return e.count(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, int64(groupPID)) == 0
	})
	for _, g := range got {
		n := e.count(`SELECT count(*) FROM orders WHERE id = $1`, g.o.ID)
		t.Logf("order %s: %d recorded, %v", g.o.ID, n, g.err)
		switch {
		case n > 1:
			t.Errorf("order %s recorded %d times", g.o.ID, n)
		case g.err == nil:
			t.Errorf("order %s answered as recorded (%d rows) while its backend was stopped: the group was cut before the stop", g.o.ID, n)
		case order.ErrorCode(g.err) != order.CodeUnavailable:
			t.Errorf("order %s: %v, want unavailable", g.o.ID, g.err)
		}
	}
}
