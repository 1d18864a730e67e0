package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// gatedClaim is the real store, except that the claim of one order
// waits until open is closed.
type gatedClaim struct {
	worker.Store
	id      uuid.UUID
	reached chan struct{}
	open    chan struct{}
	// once: the worker tries a failed claim again (a loaded machine's
	// pool dialing a connection after the descriptors ran out); a second
	// close of reached panicked and ended the whole package's run.
	once sync.Once
}

func (s *gatedClaim) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	if id == s.id {
		s.once.Do(func() { close(s.reached) })
		<-s.open
	}
	return s.Store.Claim(ctx, id, w, seq)
}

// TestOutOfDescriptorsFailsTheOrder: a worker out of file descriptors
// (every one its RLIMIT_NOFILE allows is open) when an order starts
// waits for one (executor.startWaitForDescriptors, 10 s), saying so in
// one warning, and, with none freed, ends that order failed with the
// limit reached in result.error and no exit code; it runs the next one
// once descriptors are free again. The descriptors are taken once the
// order's claim is under way (its connection to PostgreSQL, and NATS's,
// are open already).
func TestOutOfDescriptorsFailsTheOrder(t *testing.T) {
	e := newEnv(t)
	id := order.NewID()
	store := &gatedClaim{Store: e.store, id: id, reached: make(chan struct{}), open: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: "nofile", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	e.waitStatus(e.submit("nofile", "true"), order.StatusSucceeded)

	release := takeAllDescriptors(t, e, store, id, "nofile")
	// Read with the test's pool's connection already open: nothing new
	// is opened until the descriptors are free.
	o := waitTerminal(t, e, id)
	release()
	if o.Status != order.StatusFailed || o.Result == nil || o.Result.ExitCode != nil || o.Attempt != 1 ||
		!strings.Contains(o.Result.Error, "too many open files (the worker's open file limit (RLIMIT_NOFILE 4096) reached)") ||
		!strings.Contains(o.Result.Error, "gave up after 10s") {
		t.Fatalf("the order out of descriptors: %s, attempt %d, result %+v; want failed, attempt 1, no exit code and the RLIMIT_NOFILE reached after a wait",
			o.Status, o.Attempt, o.Result)
	}
	e.waitStatus(e.submit("nofile", "true"), order.StatusSucceeded)
	if n := strings.Count(logs.String(), "out of file descriptors"); n != 1 {
		t.Errorf("%d lines say the worker is out of file descriptors, want 1 (once per order, not per try):\n%s", n, logs)
	}
}

// TestOrderWaitsForAFileDescriptor: an order that finds the worker out of
// file descriptors when it starts runs once one is free again, within
// the wait: attempt 1, succeeded, and the host's next order after it.
// Without the wait it failed at once ("start: pipe2: too many open
// files").
func TestOrderWaitsForAFileDescriptor(t *testing.T) {
	e := newEnv(t)
	id := order.NewID()
	store := &gatedClaim{Store: e.store, id: id, reached: make(chan struct{}), open: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: "nofile-wait", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	e.waitStatus(e.submit("nofile-wait", "true"), order.StatusSucceeded)

	release := takeAllDescriptors(t, e, store, id, "nofile-wait")
	next := e.submit("nofile-wait", "true")
	testenv.WaitUntil(t, 20*time.Second, "the worker to say it is out of file descriptors", func() bool {
		return strings.Contains(logs.String(), "out of file descriptors")
	})
	release()
	o := e.waitStatus(id, order.StatusSucceeded)
	if o.Attempt != 1 || o.Result == nil || o.Result.ExitCode == nil || *o.Result.ExitCode != 0 {
		t.Fatalf("the order that waited for a descriptor: attempt %d, result %+v; want attempt 1, exit 0", o.Attempt, o.Result)
	}
	n := e.waitStatus(next, order.StatusSucceeded)
	if n.StartedAt == nil || o.FinishedAt == nil || n.StartedAt.Before(*o.FinishedAt) {
		t.Errorf("the next order started at %v, before the one that waited finished (%v)", n.StartedAt, o.FinishedAt)
	}
	if c := strings.Count(logs.String(), "out of file descriptors"); c != 1 {
		t.Errorf("%d lines say the worker is out of file descriptors, want 1:\n%s", c, logs)
	}
}

// TestOrderCanceledWhileItWaitsForAFileDescriptor: a cancel request for
// an order that waits for a file descriptor to start ends it canceled,
// as a cancel of a queued order does (nothing of it ran), with who
// asked and what it waited for, not failed. It was failed ("start: not
// started: canceled while it waited for a file descriptor") before.
// The cancel is recorded and read through connections open before the
// descriptors ran out (the test and the worker share the pool).
func TestOrderCanceledWhileItWaitsForAFileDescriptor(t *testing.T) {
	e := newEnv(t)
	id := order.NewID()
	store := &gatedClaim{Store: e.store, id: id, reached: make(chan struct{}), open: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: "nofile-cancel", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	e.waitStatus(e.submit("nofile-cancel", "true"), order.StatusSucceeded)

	release := takeAllDescriptors(t, e, store, id, "nofile-cancel")
	testenv.WaitUntil(t, 20*time.Second, "the worker to say it is out of file descriptors", func() bool {
		return strings.Contains(logs.String(), "out of file descriptors")
	})
	if st, err := e.store.RequestCancel(t.Context(), id, "alice", "SIGTERM"); err != nil || st != order.StatusRunning {
		t.Fatalf("cancel of the waiting order: %s, %v; want it recorded for a running order", st, err)
	}
	_ = e.q.SendControl("nofile-cancel", queue.Control{OrderID: id}) // the heartbeat reads it too
	o := waitTerminal(t, e, id)
	release()
	if o.Status != order.StatusCanceled || o.Attempt != 1 || o.Result == nil || o.Result.ExitCode != nil ||
		!strings.HasPrefix(o.Result.Error, "canceled by alice before it started, while it waited for a file descriptor: ") ||
		!strings.Contains(o.Result.Error, "too many open files") {
		t.Fatalf("the order canceled while it waited: %s, attempt %d, result %+v; want canceled by alice before it started, no exit code",
			o.Status, o.Attempt, o.Result)
	}
	e.waitStatus(e.submit("nofile-cancel", "true"), order.StatusSucceeded)
}

// TestWorkerStoppedWhileAnOrderWaitsForADescriptorHandsItBack: a
// worker asked to stop while an order waits for a file descriptor to
// start ends the wait at its shutdown grace and hands the order back,
// unstarted (queued, no result), as it hands back a claimed order it
// has not started; the host's next worker runs it (attempt 2), before
// the order submitted after it. It was recorded failed ("start: not
// started: context canceled") though nothing of it ran.
func TestWorkerStoppedWhileAnOrderWaitsForADescriptorHandsItBack(t *testing.T) {
	e := newEnv(t)
	id := order.NewID()
	store := &gatedClaim{Store: e.store, id: id, reached: make(chan struct{}), open: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	opts := worker.Options{Host: "nofile-stop", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 500 * time.Millisecond}
	stop, done := runWorker(t, opts, store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	e.waitStatus(e.submit("nofile-stop", "true"), order.StatusSucceeded)

	release := takeAllDescriptors(t, e, store, id, "nofile-stop")
	next := e.submit("nofile-stop", "true")
	testenv.WaitUntil(t, 20*time.Second, "the worker to say it is out of file descriptors", func() bool {
		return strings.Contains(logs.String(), "out of file descriptors")
	})
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("the worker stopped with %v", err)
	}
	o, err := e.store.GetOrder(t.Context(), id)
	release()
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusQueued || o.Result != nil || o.Attempt != 1 {
		t.Fatalf("the order the stop cut out of its wait: %s, attempt %d, result %+v; want queued again, attempt 1, no result",
			o.Status, o.Attempt, o.Result)
	}
	if !strings.Contains(logs.String(), "order handed back unstarted") {
		t.Errorf("no line says the order was handed back:\n%s", logs)
	}

	runWorker(t, opts, e.store, e.q, testenv.Logger(t))
	o = e.waitStatus(id, order.StatusSucceeded)
	if o.Attempt != 2 || o.Result == nil || o.Result.ExitCode == nil || *o.Result.ExitCode != 0 {
		t.Fatalf("the handed-back order at the next tenure: attempt %d, result %+v; want attempt 2, exit 0", o.Attempt, o.Result)
	}
	n := e.waitStatus(next, order.StatusSucceeded)
	if n.StartedAt == nil || o.FinishedAt == nil || n.StartedAt.Before(*o.FinishedAt) {
		t.Errorf("the next order started at %v, before the handed-back one finished (%v)", n.StartedAt, o.FinishedAt)
	}
}

// takeAllDescriptors submits order id (a true) to host, and once its
// claim is under way opens every connection the store's pool may hold,
// lowers the test process's RLIMIT_NOFILE to 4096 and opens /dev/null
// until no descriptor is left, then lets the claim go on. release closes
// them and puts the limit back.
func takeAllDescriptors(t *testing.T, e *env, store *gatedClaim, id uuid.UUID, host string) (release func()) {
	t.Helper()
	e.insertAndPublish(&order.Order{ID: id, Kind: order.KindExec, Host: host, Command: "true",
		Timeout: 20 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true})
	select {
	case <-store.reached:
	case <-testenv.Context(t).Done():
		t.Fatal("the order was never claimed")
	}
	fillPool(t, e.pool)
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	lower := was
	lower.Cur = 4096
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lower); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	close(store.open)
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, f := range held {
				f.Close()
			}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// fillPool opens every connection pool may hold (MaxConns), so that no
// query dials one while the descriptors are taken: the pool had opened
// two by the first order, and a claim that found both in use (the test's
// waitTerminal, the worker's heartbeat) dialed a third, failed with
// EMFILE and was tried again (hH23, hH24). A pool at MaxConns makes a
// query wait for a connection instead.
func fillPool(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := testenv.Context(t)
	conns := make([]*pgxpool.Conn, 0, pool.Config().MaxConns)
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
}

// waitTerminal waits for order id to end and returns it.
func waitTerminal(t *testing.T, e *env, id uuid.UUID) *order.Order {
	t.Helper()
	var o *order.Order
	testenv.WaitUntil(t, 30*time.Second, "order "+id.String()+" to end", func() bool {
		var err error
		o, err = e.store.GetOrder(t.Context(), id)
		return err == nil && o.Status.Terminal()
	})
	return o
}

// TestOrderUserPastItsProcessLimitFailsTheOrder: an order whose user
// (run_as) is past RLIMIT_NPROC, which the worker's limits give its
// orders (nobody, with a process of its own and a limit of 0), cannot
// start: it ends failed with no exit code and, in result.error, the
// limit reached (the user's, not a pids cgroup's nor the kernel's), and the next order of that user runs once the limit
// allows it. The limit is lowered once the order's claim is under way.
func TestOrderUserPastItsProcessLimitFailsTheOrder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching an order's user needs root")
	}
	e := newEnv(t)
	ctx := testenv.Context(t)
	cfg := config.Default().Worker
	cfg.AllowedUsers = []string{"nobody"}
	hp, err := hostpolicy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := order.NewID()
	store := &gatedClaim{Store: e.store, id: id, reached: make(chan struct{}), open: make(chan struct{})}
	runWorkerPolicy(t, worker.Options{Host: "nproc", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, hp, testenv.Logger(t))
	asNobody := func(id uuid.UUID) *order.Order {
		return &order.Order{ID: id, Kind: order.KindExec, Host: "nproc", Command: "true", RunAs: "nobody",
			Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	}
	warm := asNobody(order.NewID())
	e.insertAndPublish(warm)
	e.waitStatus(warm.ID, order.StatusSucceeded)

	e.insertAndPublish(asNobody(id))
	select {
	case <-store.reached:
	case <-ctx.Done():
		t.Fatal("the order was never claimed")
	}
	// One process of the user already: the kernel refuses the exec of
	// a process whose user then has more than the limit (0).
	other := exec.Command("sleep", "60")
	other.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = other.Process.Kill()
		_ = other.Wait()
	}()
	var was unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &was); err != nil {
		t.Fatal(err)
	}
	none := was
	none.Cur = 0
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &none); err != nil {
		t.Fatal(err)
	}
	close(store.open)
	o := waitTerminal(t, e, id)
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &was); err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusFailed || o.Result == nil || o.Result.ExitCode != nil ||
		!strings.Contains(o.Result.Error, "resource temporarily unavailable (user nobody (uid 65534) at its process limit: RLIMIT_NPROC 0, ") ||
		o.Attempt != 1 {
		t.Fatalf("the order past its user's process limit: %s, attempt %d, result %+v; want failed, attempt 1, the RLIMIT_NPROC reached and no exit code",
			o.Status, o.Attempt, o.Result)
	}
	next := asNobody(order.NewID())
	e.insertAndPublish(next)
	e.waitStatus(next.ID, order.StatusSucceeded)
}
