package postgres_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestRecordProcessAgainAfterALostAnswer: the worker retries a process
// record whose commit's answer was lost (the connection dropped after the
// server committed), as it retries every write while PostgreSQL is away.
// The retry found its own record and answered ErrNotOwner, and the worker
// killed the order it had just started and recorded it failed, "no longer
// the host's owner". The same record again is recorded; another process,
// another worker's, or one after the successor settled the attempt is
// still refused.
func TestRecordProcessAgainAfterALostAnswer(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	o := e.insert("h", "p", nil)
	c := e.claim(o.ID, "w1")
	p := postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b", MachineID: "m", Cgroup: "/sys/fs/cgroup/x"}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); err != nil {
		t.Fatalf("record: %v", err)
	}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); err != nil {
		t.Fatalf("the same record again (its first answer lost): %v", err)
	}
	other := p
	other.PID, other.PGID = 4343, 4343
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", other); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("another process for the attempt: %v, want ErrNotOwner", err)
	}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w2", p); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("the record by another worker: %v, want ErrNotOwner", err)
	}
	if got, err := e.store.ProcessOf(e.ctx, o.ID, c.Attempt); err != nil || got == nil || got.PID != p.PID || got.Worker != "w1" {
		t.Fatalf("the attempt's record: %+v, %v", got, err)
	}
	e.own("h", "w2")
	if ok, err := e.store.InterruptAttempt(e.ctx, o.ID, c.Attempt, "w2", "test", nil); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); !errors.Is(err, postgres.ErrNotOwner) {
		t.Errorf("the record once the successor settled the attempt: %v, want ErrNotOwner", err)
	}
}

// TestUnreapedAttempts: an attempt's mark (interrupted, queued again, or
// abandoned with its host) is kept on its process record until its
// processes' end is recorded, so a successor finds it even when the
// worker that marked it died before its reap. Before, the mark ended
// "running", which was all a takeover looked for. A result, a claim and
// an attempt without a process record leave nothing to reap.
func TestUnreapedAttempts(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	p := postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b", MachineID: "m"}
	start := func(mod func(*order.Order)) *order.Order {
		t.Helper()
		o := e.insert("h", "p", mod)
		c := e.claim(o.ID, "w1")
		if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p); err != nil {
			t.Fatal(err)
		}
		return c
	}
	interrupted, requeued, done := start(nil), start(func(o *order.Order) { o.Idempotent = true }), start(nil)
	if err := e.store.Complete(e.ctx, done.ID, done.Attempt, succeeded("")); err != nil {
		t.Fatal(err)
	}
	norecord := e.claim(e.insert("h", "p", nil).ID, "w1")

	e.own("h", "w2") // w1 died; w2 marks its attempts, then dies too
	if ok, err := e.store.InterruptAttempt(e.ctx, interrupted.ID, 1, "w2", "test", nil); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	if ok, err := e.store.Requeue(e.ctx, requeued.ID, 1, "w2", "test"); !ok || err != nil {
		t.Fatalf("requeue: %v %v", ok, err)
	}
	if ok, err := e.store.InterruptAttempt(e.ctx, norecord.ID, 1, "w2", "test", nil); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	got, err := e.store.UnreapedAttempts(e.ctx, "h")
	want := []postgres.Unreaped{{ID: interrupted.ID, Attempt: 1, Worker: "w1"}, {ID: requeued.ID, Attempt: 1, Worker: "w1", Requeued: true}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("unreaped: %+v, %v; want %+v", got, err, want)
	}
	if other, err := e.store.UnreapedAttempts(e.ctx, "other"); err != nil || len(other) != 0 {
		t.Fatalf("another host's: %+v, %v", other, err)
	}

	// The requeued order runs again: its first attempt stays to reap.
	e.own("h", "w3")
	e.claim(requeued.ID, "w3")
	if got, err := e.store.UnreapedAttempts(e.ctx, "h"); err != nil || len(got) != 2 || !got[1].Requeued {
		t.Fatalf("unreaped after the requeued order's next claim: %+v, %v", got, err)
	}
	for _, u := range want {
		if err := e.store.RecordEvidence(e.ctx, u.ID, u.Attempt, "w3", postgres.Evidence{Reap: map[string]any{"found": false}}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := e.store.UnreapedAttempts(e.ctx, "h"); err != nil || len(got) != 0 {
		t.Fatalf("unreaped once reaped: %+v, %v", got, err)
	}

	// Abandoned with its host by an admin: a worker that starts for the
	// host later still reaps it.
	e.own("h", "w1")
	left := start(nil)
	if _, _, _, err := e.store.ForgetHost(e.ctx, "h", "admin"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.UnreapedAttempts(e.ctx, "h"); err != nil || len(got) != 1 || got[0].ID != left.ID || got[0].Requeued {
		t.Fatalf("unreaped after the host was abandoned: %+v, %v", got, err)
	}
}

// TestProcessRecordWithTheResult: the record of a process that ended
// before it was committed goes with the result, in the result's
// statement and under its guard, dated back to the process's start, in
// each way a result is written: alone, with the next claim, with its
// outputs staged. A refused result writes no record.
func TestProcessRecordWithTheResult(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	p := postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b", MachineID: "m", PidNS: 7, Cgroup: "/sys/fs/cgroup/x"}
	big := bytes.Repeat([]byte("x"), 2<<20) // staged (stageOutputsFrom)
	for _, how := range []string{"alone", "with the next claim", "staged"} {
		o := e.insert("h", "p", nil)
		c := e.claim(o.ID, "w1")
		f := postgres.Finish{Status: order.StatusSucceeded, Actor: "w1", Record: &p, Started: time.Now().Add(-time.Hour)}
		if how == "staged" {
			f.Result.Stdout = order.Output{Content: big, Bytes: int64(len(big))}
		}
		if _, err := e.store.ProcessOf(e.ctx, o.ID, c.Attempt); err != nil {
			t.Fatal(err)
		}
		wrong := f
		if err := e.store.Complete(e.ctx, o.ID, c.Attempt+1, wrong); order.ErrorCode(err) != order.CodeConflict {
			t.Fatalf("%s: a result of another attempt: %v, want a conflict", how, err)
		}
		if got, err := e.store.ProcessOf(e.ctx, o.ID, c.Attempt); err != nil || got != nil {
			t.Fatalf("%s: a refused result wrote the record %+v (%v)", how, got, err)
		}
		if how == "with the next claim" {
			next := e.insert("h", "p", nil)
			if step, err := e.store.CompleteAndClaim(e.ctx, o.ID, c.Attempt, f, next.ID, "w1", 0); err != nil || step.Done != nil || !step.Claimed {
				t.Fatalf("%s: %+v, %v", how, step, err)
			}
		} else if err := e.store.Complete(e.ctx, o.ID, c.Attempt, f); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		got, err := e.store.ProcessOf(e.ctx, o.ID, c.Attempt)
		if err != nil || got == nil {
			t.Fatalf("%s: the record: %+v, %v", how, got, err)
		}
		done, err := e.store.GetOrder(e.ctx, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.PID != p.PID || got.PGID != p.PGID || got.StartTime != p.StartTime || got.BootID != p.BootID ||
			got.MachineID != p.MachineID || got.PidNS != p.PidNS || got.Cgroup != p.Cgroup || got.Worker != "w1" ||
			done.Status != order.StatusSucceeded || done.FinishedAt == nil || !got.StartedAt.Before(done.FinishedAt.Add(-59*time.Minute)) {
			t.Errorf("%s: record %+v of order %s finished at %v; want %+v by w1, started an hour before", how, got, done.Status, done.FinishedAt, p)
		}
	}
}

// TestInterruptedOrderKeepsTheOutputItsMarkStored: the mark of a dead
// worker's attempt stores the output it streamed in its own statement,
// and the evidence after the reap does not replace it (an order answered
// interrupted with its output is never answered with another); a mark
// that stored none (an admin's forget, a failed read of the live stream)
// has the evidence store it. Before, only the evidence stored the
// output, after the order already read interrupted.
func TestInterruptedOrderKeepsTheOutputItsMarkStored(t *testing.T) {
	e := newStoreEnv(t)
	e.own("h", "w1")
	marked, late := e.insert("h", "p", nil), e.insert("h", "p", nil)
	cm, cl := e.claim(marked.ID, "w1"), e.claim(late.ID, "w1")
	e.own("h", "w2")
	out := &postgres.PartialOutput{Stdout: []byte("streamed\n"), Stderr: []byte("err\n"), StdoutTruncated: true}
	if ok, err := e.store.InterruptAttempt(e.ctx, marked.ID, cm.Attempt, "w2", "test", out); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	if ok, err := e.store.InterruptAttempt(e.ctx, late.ID, cl.Attempt, "w2", "test", nil); !ok || err != nil {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	want := func(what string, o *order.Order, stdout, stderr string, truncated bool) {
		t.Helper()
		if o.Status != order.StatusInterrupted || o.Result == nil ||
			string(o.Result.Stdout.Content) != stdout || o.Result.Stdout.Bytes != int64(len(stdout)) ||
			o.Result.Stdout.Truncated != truncated || string(o.Result.Stderr.Content) != stderr {
			t.Errorf("%s: %s %+v, want interrupted with stdout %q (truncated %v), stderr %q", what, o.Status, o.Result, stdout, truncated, stderr)
		}
	}
	o, err := e.store.GetOrder(e.ctx, marked.ID)
	if err != nil {
		t.Fatal(err)
	}
	want("once marked", o, "streamed\n", "err\n", true)
	other := postgres.Evidence{Reap: map[string]any{"found": false}, Output: &postgres.PartialOutput{Stdout: []byte("streamed\nand more\n")}}
	for _, id := range []uuid.UUID{marked.ID, late.ID} {
		if err := e.store.RecordEvidence(e.ctx, id, 1, "w2", other); err != nil {
			t.Fatal(err)
		}
	}
	if o, err = e.store.GetOrder(e.ctx, marked.ID); err != nil {
		t.Fatal(err)
	}
	want("its evidence recorded", o, "streamed\n", "err\n", true)
	if o, err = e.store.GetOrder(e.ctx, late.ID); err != nil {
		t.Fatal(err)
	}
	want("marked with no output, its evidence recorded", o, "streamed\nand more\n", "", false)
}
