package worker_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
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
