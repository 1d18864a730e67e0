package worker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// markRead is a worker's store that calls read at the first read of a
// process record: the reap's, which comes right after the mark of an
// abandoned attempt and before its evidence.
type markRead struct {
	*postgres.Store
	read func(id uuid.UUID)
	once sync.Once
}

func (s *markRead) ProcessOf(ctx context.Context, id uuid.UUID, attempt int) (*postgres.Process, error) {
	s.once.Do(func() { s.read(id) })
	return s.Store.ProcessOf(ctx, id, attempt)
}

// TestInterruptedOrderReadsEndedWithItsOutput: a worker dies after its
// order printed; its successor marks the order interrupted. From the
// mark on, the store's reads the API answers with (the SSE's look at the
// status, GetOrderWithoutOutputs; the order with its output, GetOrder)
// find it ended with the output its worker streamed. Before, the mark
// ended it with none, and the output came with the evidence, after the
// reap and a read of the live stream (docs/decisions.md, "(hB29)"): a
// follower was told "finished" in between with no output.
func TestInterruptedOrderReadsEndedWithItsOutput(t *testing.T) {
	e := newEnv(t)
	const host, stdout, stderr = "markout", "printed before the loss\n", "and on stderr\n"
	id := e.submit(host, "sh", "-c", "printf 'printed before the loss\\n'; printf 'and on stderr\\n' >&2")
	_, done := e.start(host, func(p string, o *order.Order) error {
		if p == "after_exec" && o.ID == id {
			return errCrash
		}
		return nil
	})
	if err := <-done; !errors.Is(err, errCrash) {
		t.Fatalf("the first worker stopped with %v, want its fail point", err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the order's output in the live stream", func() bool {
		p, err := e.q.PartialOutput(t.Context(), host, id, 1<<20, 0)
		return err == nil && string(p.Stdout) == stdout && string(p.Stderr) == stderr
	})
	read := make(chan struct{})
	store := &markRead{Store: e.store, read: func(got uuid.UUID) {
		defer close(read)
		ctx := context.WithoutCancel(t.Context())
		lean, err := e.store.GetOrderWithoutOutputs(ctx, got)
		if err != nil {
			t.Error(err)
			return
		}
		if got != id || lean.Status != order.StatusInterrupted {
			t.Errorf("at the reap order %s reads %s, want %s interrupted", got, lean.Status, id)
			return
		}
		o, err := e.store.GetOrder(ctx, id)
		if err != nil {
			t.Error(err)
			return
		}
		if o.Result == nil || string(o.Result.Stdout.Content) != stdout || string(o.Result.Stderr.Content) != stderr {
			t.Errorf("marked, the order reads interrupted with result %+v, want the output its worker streamed: %q and %q",
				o.Result, stdout, stderr)
		}
	}}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, testenv.Logger(t))
	select {
	case <-read:
	case <-time.After(time.Minute):
		t.Fatal("the successor read no process record")
	}
	testenv.WaitUntil(t, 30*time.Second, "the order's evidence", func() bool {
		return len(reapedEvents(t, e, id)) == 1
	})
	if o := e.waitStatus(id, order.StatusInterrupted); o.Result == nil || string(o.Result.Stdout.Content) != stdout {
		t.Errorf("once reaped, the order holds %+v; want its stdout %q still", o.Result, stdout)
	}
}
