package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
)

// lostMark is a Store whose first settling write (requeue or interrupt)
// that applies commits but reports an error, as when the connection
// drops after the server committed.
type lostMark struct {
	*postgres.Store
	lost atomic.Bool
}

func (s *lostMark) Requeue(ctx context.Context, id uuid.UUID, attempt int, actor, reason string) (bool, error) {
	ok, err := s.Store.Requeue(ctx, id, attempt, actor, reason)
	if err == nil && ok && s.lost.CompareAndSwap(false, true) {
		return false, errors.New("unexpected EOF")
	}
	return ok, err
}

func (s *lostMark) InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *postgres.PartialOutput) (bool, error) {
	ok, err := s.Store.InterruptAttempt(ctx, id, attempt, actor, reason, out)
	if err == nil && ok && s.lost.CompareAndSwap(false, true) {
		return false, errors.New("unexpected EOF")
	}
	return ok, err
}

// leftover starts a process leading its own session, as a dead worker's
// order leaves it, and returns its record and a channel closed once it
// has exited.
func leftover(t *testing.T) (postgres.Process, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	pid := cmd.Process.Pid
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's ")": state is the first, starttime the 20th.
	start, err := strconv.ParseUint(string(bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])[19]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := executor.CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	return postgres.Process{PID: pid, PGID: pid, StartTime: start, BootID: boot}, exited
}

// startedBy records a queued order of host (idempotent or not) and its
// message, claimed by worker, the host's owner, with proc as its
// attempt's process: what a worker that then died leaves behind.
func startedBy(t *testing.T, e *env, host, worker string, idempotent bool, proc postgres.Process) *order.Order {
	t.Helper()
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
		Idempotent: idempotent, Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.TakeHost(t.Context(), host, "test", postgres.Owner{Instance: worker}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(t.Context(), o.ID, worker, 1); err != nil || !claimed {
		t.Fatalf("claim as %s: %v %v", worker, claimed, err)
	}
	if err := e.store.RecordProcess(t.Context(), o.ID, 1, worker, proc); err != nil {
		t.Fatal(err)
	}
	return o
}

// reapedEvents are the "reaped" events of order id, oldest first.
func reapedEvents(t *testing.T, e *env, id uuid.UUID) []postgres.Event {
	t.Helper()
	evs, err := e.store.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var reaped []postgres.Event
	for _, ev := range evs {
		if ev.Type == "reaped" {
			reaped = append(reaped, ev)
		}
	}
	return reaped
}

// TestLostMarkAnswerStillReapsTheLeftovers: the successor marks a dead
// worker's attempt (interrupted, or queued again when the order is
// idempotent) and the mark commits, but its answer is lost. The takeover
// failed, and the next one no longer found the attempt running: the
// dead worker's processes were never reaped and ran on next to the
// host's next orders. The next takeover now reaps them first.
func TestLostMarkAnswerStillReapsTheLeftovers(t *testing.T) {
	for _, tt := range []struct {
		name       string
		idempotent bool
		want       order.Status
		attempt    int
	}{
		{"interrupted", false, order.StatusInterrupted, 1},
		{"requeued", true, order.StatusSucceeded, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			host := "lostmark-" + tt.name
			dead := host + "/dead"
			proc, exited := leftover(t)
			o := startedBy(t, e, host, dead, tt.idempotent, proc)
			next := e.submit(host, "true")

			store := &lostMark{Store: e.store}
			runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
				ShutdownGrace: 5 * time.Second}, store, e.q, testenv.Logger(t))
			got := e.waitStatus(o.ID, tt.want)
			e.waitStatus(next, order.StatusSucceeded)
			if !store.lost.Load() {
				t.Fatal("no answer of a mark was lost: nothing was tested")
			}
			if got.Attempt != tt.attempt {
				t.Errorf("attempt %d, want %d", got.Attempt, tt.attempt)
			}
			select {
			case <-exited:
			case <-time.After(20 * time.Second): // its process sleeps 60 s: never reaped still fails
				t.Fatal("the host ran its next orders while the dead worker's process still ran: never reaped")
			}
			p, err := e.store.ProcessOf(t.Context(), o.ID, 1)
			if err != nil || p == nil {
				t.Fatalf("the dead attempt's record: %+v, %v", p, err)
			}
			if reaped := reapedEvents(t, e, o.ID); len(reaped) != 1 {
				t.Errorf("%d reaped events, want 1", len(reaped))
			}
		})
	}
}

// TestMarkedAttemptOfADeadSuccessorIsReaped: the worker that took the
// host over marked the dead worker's attempt interrupted and died before
// it reaped its processes. The next worker found no running order and
// ran the host's next orders next to the first worker's leftovers. It
// now finds the attempt by its mark, kept in PostgreSQL until the reap's
// evidence, and reaps it before it runs anything.
func TestMarkedAttemptOfADeadSuccessorIsReaped(t *testing.T) {
	e := newEnv(t)
	host := "deadsuccessor"
	proc, exited := leftover(t)
	o := startedBy(t, e, host, host+"/first", false, proc)
	if _, _, err := e.store.TakeHost(t.Context(), host, "test", postgres.Owner{Instance: host + "/second"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.InterruptAttempt(t.Context(), o.ID, 1, host+"/second", "interrupted: the second worker's mark", nil); err != nil || !ok {
		t.Fatalf("the second worker's mark: %v %v", ok, err)
	}
	next := e.submit(host, "true")

	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, testenv.Logger(t))
	ran := e.waitStatus(next, order.StatusSucceeded)
	select {
	case <-exited:
	case <-time.After(20 * time.Second): // its process sleeps 60 s: never reaped still fails
		t.Fatal("the host ran its next order while the first worker's process still ran: never reaped")
	}
	reaped := reapedEvents(t, e, o.ID)
	if len(reaped) != 1 || ran.StartedAt == nil || !reaped[0].At.Before(*ran.StartedAt) {
		t.Fatalf("reaped events %+v, next order started %v: want one reap before it", reaped, ran.StartedAt)
	}
	if got := e.waitStatus(o.ID, order.StatusInterrupted); got.Processes == nil {
		t.Errorf("the interrupted order keeps no evidence of its processes")
	}
}

// reapedMeanwhile is a lostMark whose lost answer is followed by another
// worker's tenure: it takes the host over and reaps the marked attempt
// (its durable mark), as a standby that took the released lease does.
type reapedMeanwhile struct {
	*postgres.Store
	other string
	kill  func()
	lost  atomic.Bool
}

func (s *reapedMeanwhile) InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *postgres.PartialOutput) (bool, error) {
	ok, err := s.Store.InterruptAttempt(ctx, id, attempt, actor, reason, out)
	if err != nil || !ok || !s.lost.CompareAndSwap(false, true) {
		return ok, err
	}
	if _, _, err := s.Store.TakeHost(ctx, "reapedmeanwhile", "test", postgres.Owner{Instance: s.other}); err != nil {
		return false, err
	}
	s.kill()
	if err := s.Store.RecordEvidence(ctx, id, attempt, s.other, postgres.Evidence{Reap: map[string]any{"killed": 1}}); err != nil {
		return false, err
	}
	return false, errors.New("unexpected EOF")
}

// TestAttemptReapedByAnotherOwnerIsNotReapedAgain: the worker's mark
// committed but its answer was lost; before it took the host again,
// another worker owned it and reaped the attempt by its durable mark.
// The first worker's memory of the mark then reaped it a second time:
// a second "reaped" event, and the order's evidence of the other's reap
// (it killed the process) replaced by one that found nothing.
func TestAttemptReapedByAnotherOwnerIsNotReapedAgain(t *testing.T) {
	e := newEnv(t)
	host := "reapedmeanwhile"
	dead := host + "/dead"
	proc, exited := leftover(t)
	o := startedBy(t, e, host, dead, false, proc)
	store := &reapedMeanwhile{Store: e.store, other: host + "/other", kill: func() {
		_ = syscall.Kill(proc.PID, syscall.SIGKILL)
		<-exited
	}}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, testenv.Logger(t))
	e.waitStatus(o.ID, order.StatusInterrupted)
	next := e.submit(host, "true")
	e.waitStatus(next, order.StatusSucceeded)
	if !store.lost.Load() {
		t.Fatal("no answer of a mark was lost: nothing was tested")
	}
	reaped := len(reapedEvents(t, e, o.ID))
	got, err := e.store.GetOrder(t.Context(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if reaped != 1 || fmt.Sprint(got.Processes["killed"]) != "1" {
		t.Errorf("%d reaped events, evidence %v: want the other worker's reap only", reaped, got.Processes)
	}
}
