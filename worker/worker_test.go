package worker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type env struct {
	t     testing.TB
	store *postgres.Store
	q     *queue.Queue
	// pool is store's, where newEnv made it; nil otherwise.
	pool *pgxpool.Pool
}

func newEnv(t testing.TB) *env {
	return newEnvAckWait(t, time.Second)
}

// newEnvAckWait is newEnv with the host consumers' ack wait at ackWait.
// Tests that hold which write records an order's result (Complete alone,
// or CompleteAndClaim with a next delivery) take the product's 30 s: with
// newEnv's second, a stall of a second between the delivery and the
// start (the claim's commit on a loaded machine) redelivers the order,
// and the redelivery becomes the next delivery its result is written
// with.
func newEnvAckWait(t testing.TB, ackWait time.Duration) *env {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: ackWait, LeaseTTL: 2 * time.Second})
	return &env{t: t, store: store, q: q, pool: pool}
}

// start runs a worker for host until the test ends or it stops by itself;
// the returned channel yields its Run error.
func (e *env) start(host string, fp func(string, *order.Order) error) (stop func(), done <-chan error) {
	return runWorker(e.t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, FailPoint: fp}, e.store, e.q, testenv.Logger(e.t))
}

// submit records and publishes an order the way the intake does: a
// publish JetStream does not answer goes again (the intake's outbox does
// so), under the order's id as its message id, which the stream keeps once.
func (e *env) submit(host, command string, args ...string) uuid.UUID {
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: command, Args: args,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := e.store.InsertOrder(e.t.Context(), o); err != nil {
		e.t.Fatal(err)
	}
	if err := testenv.Answered(e.t, "the publish of order "+o.ID.String(), func(ctx context.Context) error {
		_, err := e.q.Publish(ctx, host, o.ID)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return o.ID
}

func (e *env) waitStatus(id uuid.UUID, want order.Status) *order.Order {
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := e.store.GetOrder(e.t.Context(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if o.Status == want {
			return o
		}
		if o.Status.Terminal() || time.Now().After(deadline) {
			e.t.Fatalf("order %s is %s, want %s", id, o.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStarted waits until the order's process has started: its record
// is written once the process runs. A running status alone is the claim,
// which comes before the start: a worker asked to stop between the two
// hands the order back unstarted (execute), so a test that stops or
// kills the worker "while the order runs" waits for this.
func (e *env) waitStarted(id uuid.UUID) *order.Order {
	e.t.Helper()
	var o *order.Order
	testenv.WaitUntil(e.t, 30*time.Second, "the process of order "+id.String()+" starts", func() bool {
		var err error
		if o, err = e.store.GetOrder(e.t.Context(), id); err != nil {
			e.t.Fatal(err)
		}
		if o.Status != order.StatusRunning {
			if o.Status.Terminal() {
				e.t.Fatalf("order %s is %s, want it started", id, o.Status)
			}
			return false
		}
		p, err := e.store.ProcessOf(e.t.Context(), id, o.Attempt)
		if err != nil {
			e.t.Fatal(err)
		}
		return p != nil
	})
	return o
}

var errCrash = errors.New("injected crash")

// TestFailPointAfterClaim: the worker dies after committing the claim and
// before executing. The redelivery finds the order running and marks it
// interrupted: it never executes, and the next order runs.
func TestFailPointAfterClaim(t *testing.T) {
	e := newEnv(t)
	marker := filepath.Join(t.TempDir(), "ran")
	id := e.submit("fp1", "touch", marker)
	_, done := e.start("fp1", func(p string, o *order.Order) error {
		if p == "after_claim" && o.ID == id {
			return errCrash
		}
		return nil
	})
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("worker stopped with %v, want the injected crash", err)
	}
	next := e.submit("fp1", "true")
	e.start("fp1", nil)
	o := e.waitStatus(id, order.StatusInterrupted)
	if o.Attempt != 1 {
		t.Fatalf("attempt = %d", o.Attempt)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("the interrupted order was executed")
	}
	e.waitStatus(next, order.StatusSucceeded)
}

// TestFailPointAfterExec: the worker dies after the command ran and before
// the result was written. The order ran once and becomes interrupted; it is
// never run again. Its command runs until its process record is in
// PostgreSQL (past the worker's RecordWait): the record committed on its
// own is what the successor reaps by (a quicker one's goes with the
// result: TestWorkerStoppedBeforeAQuickOrdersResult).
func TestFailPointAfterExec(t *testing.T) {
	e := newEnv(t)
	f, gate := filepath.Join(t.TempDir(), "count"), filepath.Join(t.TempDir(), "gate")
	id := e.submit("fp2", "sh", "-c", `echo x >> "$1"; while [ ! -e "$2" ]; do sleep 0.01; done`, "_", f, gate)
	_, done := e.start("fp2", func(p string, o *order.Order) error {
		if p == "after_exec" && o.ID == id {
			return errCrash
		}
		return nil
	})
	testenv.WaitUntil(t, 30*time.Second, "the order's process record", func() bool {
		p, err := e.store.ProcessOf(t.Context(), id, 1)
		return err == nil && p != nil
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("worker stopped with %v", err)
	}
	next := e.submit("fp2", "true")
	e.start("fp2", nil)
	e.waitStatus(id, order.StatusInterrupted)
	e.waitStatus(next, order.StatusSucceeded)
	data, _ := os.ReadFile(f)
	if n := strings.Count(string(data), "x"); n != 1 {
		t.Fatalf("ran %d times, want 1", n)
	}
	evs, err := e.store.Events(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "submitted,started,interrupted,reaped" {
		t.Fatalf("events = %v", types)
	}
	// The successor recorded what it found of the dead attempt's processes:
	// by the order's cgroup where it had one (worker.cgroup: auto).
	reaped := evs[len(evs)-1].Detail
	want := "group"
	if reaped["cgroup"] != nil && reaped["cgroup"] != "" {
		want = "cgroup"
	}
	if reaped["process_recorded"] != true || reaped["verified"] != want {
		t.Fatalf("reaped evidence = %v", reaped)
	}
}

// TestSecondWorkerIsStandby: two workers for one host never both consume;
// the second takes over when the first stops.
func TestSecondWorkerIsStandby(t *testing.T) {
	e := newEnv(t)
	stop1, _ := e.start("lease", nil)
	e.waitStatus(e.submit("lease", "true"), order.StatusSucceeded)
	_, done2 := e.start("lease", nil)

	// While the first holds the lease, the second must not be running orders:
	// every order is executed by the first instance, one at a time. The
	// orders are queued back to back and take a moment each, so that two
	// consuming workers would show as another worker or as overlapping runs.
	first := e.waitStatus(e.submit("lease", "true"), order.StatusSucceeded).Worker
	if first == "" {
		t.Fatal("no worker recorded")
	}
	var ids []uuid.UUID
	for range 10 {
		ids = append(ids, e.submit("lease", "sleep", "0.05"))
	}
	var prevEnd time.Time
	for _, id := range ids {
		o := e.waitStatus(id, order.StatusSucceeded)
		if o.Worker != first {
			t.Fatalf("orders ran on %s and %s while the first held the lease", first, o.Worker)
		}
		if o.StartedAt == nil || o.FinishedAt == nil || o.StartedAt.Before(prevEnd) {
			t.Fatalf("order %s started at %v, before the previous one finished at %v", id, o.StartedAt, prevEnd)
		}
		prevEnd = *o.FinishedAt
	}
	before := e.waitStatus(e.submit("lease", "true"), order.StatusSucceeded).Worker
	stop1()
	after := e.waitStatus(e.submit("lease", "true"), order.StatusSucceeded).Worker
	if after == before {
		t.Fatalf("standby did not take over: both %s", after)
	}
	select {
	case err := <-done2:
		t.Fatalf("standby stopped: %v", err)
	default:
	}
}

// TestPipelinedClaimThenCrash: orders queued back to back are claimed in
// the same transaction as the previous result. A crash right after such a
// claim leaves that order interrupted and never executed; the orders
// around it run exactly once, in order.
func TestPipelinedClaimThenCrash(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	first := e.submit("pipe", "sleep", "0.3") // long enough for the next message to be waiting
	second := e.submit("pipe", "touch", filepath.Join(dir, "second"))
	third := e.submit("pipe", "touch", filepath.Join(dir, "third"))
	_, done := e.start("pipe", func(p string, o *order.Order) error {
		if p == "after_claim" && o.ID == second {
			return errCrash
		}
		return nil
	})
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("worker stopped with %v", err)
	}
	a := e.waitStatus(first, order.StatusSucceeded)
	b, err := e.store.GetOrder(t.Context(), second)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != order.StatusRunning || b.StartedAt == nil || !b.StartedAt.Equal(*a.FinishedAt) {
		t.Fatalf("second order was not claimed in the first one's transaction: status %s started %v finished %v",
			b.Status, b.StartedAt, a.FinishedAt)
	}
	e.start("pipe", nil)
	e.waitStatus(second, order.StatusInterrupted)
	e.waitStatus(third, order.StatusSucceeded)
	if _, err := os.Stat(filepath.Join(dir, "second")); !os.IsNotExist(err) {
		t.Fatal("the interrupted order was executed")
	}
}

// TestOrderFromANewerAPIIsRefused: an order whose recorded policy decision
// has a key this worker does not know was accepted by a newer API, which
// may count on a check only a newer worker makes (as the deny rules on the
// resolved path once did). The worker refuses it with the reason and goes
// on with the host's next order; it never runs it without the check.
func TestOrderFromANewerAPIIsRefused(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	e := &env{t: t, store: store,
		q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	marker := filepath.Join(t.TempDir(), "ran")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "nw1", Command: "touch", Args: []string{marker},
		Timeout: 20 * time.Second, Principal: "test", Source: "rest",
		Policy: order.Decision{Decision: "allow", Matched: []string{"ops:allow:.*"}}}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `UPDATE orders SET policy = policy || '{"require_check": {"rule": "ops"}}' WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), o.Host, o.ID); err != nil {
		t.Fatal(err)
	}
	next := e.submit("nw1", "true")
	e.start("nw1", nil)

	got := e.waitStatus(o.ID, order.StatusRejected)
	if got.Result == nil || !strings.Contains(got.Result.Error, `"require_check"`) || !strings.Contains(got.Result.Error, "upgrade the worker") {
		t.Errorf("result = %+v, want the unknown key and the advice to upgrade the worker", got.Result)
	}
	// The refusal's code is stored with its text: the answer's
	// result.code was empty.
	if got.Result != nil && !strings.HasPrefix(got.Result.Error, "unprocessable: ") {
		t.Errorf("result error %q does not start with its code", got.Result.Error)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("the order was executed without the check its API counted on")
	}
	e.waitStatus(next, order.StatusSucceeded)
}

// TestRunDirectoryFailureFailsTheOrder: a script order whose run
// directory cannot be made on the host (a full disk, a missing temp
// directory) ends failed with the reason, as a failed start does, and the
// host goes on. It ended rejected, as if the host policy had refused it.
func TestRunDirectoryFailureFailsTheOrder(t *testing.T) {
	e := newEnv(t)
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "gone"))
	o := &order.Order{ID: order.NewID(), Kind: order.KindScript, Host: "rd1", Command: "runbook:T.md",
		Timeout: 20 * time.Second, Principal: "test", Source: "runbook",
		Script: &order.Script{Runbook: "T.md", Body: []byte("echo hi\n")}}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), o.Host, o.ID); err != nil {
		t.Fatal(err)
	}
	next := e.submit("rd1", "true")
	e.start("rd1", nil)

	got := e.waitStatus(o.ID, order.StatusFailed)
	if got.Result == nil || !strings.Contains(got.Result.Error, "run directory") {
		t.Errorf("result = %+v, want the run directory's failure", got.Result)
	}
	e.waitStatus(next, order.StatusSucceeded)
}
