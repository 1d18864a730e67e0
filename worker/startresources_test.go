package worker_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
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
}

func (s *gatedClaim) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	if id == s.id {
		close(s.reached)
		<-s.open
	}
	return s.Store.Claim(ctx, id, w, seq)
}

// TestOutOfDescriptorsFailsTheOrder: a worker out of file descriptors
// (every one its RLIMIT_NOFILE allows is open) when an order starts ends
// that order failed, with the reason in result.error and no exit code,
// and runs the next one once descriptors are free again; nothing is
// retried. The descriptors are taken once the order's claim is under way
// (its connection to PostgreSQL, and NATS's, are open already).
func TestOutOfDescriptorsFailsTheOrder(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	id := order.NewID()
	store := &gatedClaim{Store: e.store, id: id, reached: make(chan struct{}), open: make(chan struct{})}
	runWorker(t, worker.Options{Host: "nofile", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, testenv.Logger(t))
	e.waitStatus(e.submit("nofile", "true"), order.StatusSucceeded)

	e.insertAndPublish(&order.Order{ID: id, Kind: order.KindExec, Host: "nofile", Command: "true",
		Timeout: 20 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true})
	select {
	case <-store.reached:
	case <-ctx.Done():
		t.Fatal("the order was never claimed")
	}
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
	// Read with the test's pool's connection already open: nothing new
	// is opened until the descriptors are free.
	o := waitTerminal(t, e, id)
	for _, f := range held {
		f.Close()
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusFailed || o.Result == nil || o.Result.ExitCode != nil ||
		!strings.Contains(o.Result.Error, "too many open files") || o.Attempt != 1 {
		t.Fatalf("the order out of descriptors: %s, attempt %d, result %+v; want failed, attempt 1, too many open files and no exit code",
			o.Status, o.Attempt, o.Result)
	}
	e.waitStatus(e.submit("nofile", "true"), order.StatusSucceeded)
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
// start: it ends failed with the reason in result.error
// and no exit code, and the next order of that user runs once the limit
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
		!strings.Contains(o.Result.Error, "resource temporarily unavailable") || o.Attempt != 1 {
		t.Fatalf("the order past its user's process limit: %s, attempt %d, result %+v; want failed, attempt 1, resource temporarily unavailable and no exit code",
			o.Status, o.Attempt, o.Result)
	}
	next := asNobody(order.NewID())
	e.insertAndPublish(next)
	e.waitStatus(next.ID, order.StatusSucceeded)
}
