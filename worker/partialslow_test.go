package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// interruptsThen is a worker's store that calls first at its first
// InterruptAttempt, with the output the mark brought, before the mark.
type interruptsThen struct {
	*postgres.Store
	first func(out *postgres.PartialOutput)
	once  sync.Once
}

func (s *interruptsThen) InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *postgres.PartialOutput) (bool, error) {
	s.once.Do(func() { s.first(out) })
	return s.Store.InterruptAttempt(ctx, id, attempt, actor, reason, out)
}

// TestSlowLiveStreamAtTheMarkStoresNoShortOutput: a successor marks a
// dead worker's order interrupted with the output it read from the live
// stream just before (hB29), and an order's stored output is never
// replaced (postgres.RecordEvidence). The live stream's server slow to
// deliver the chunks, past the read's Fetch wait, while it answered the
// consumer's info: the read ended short without an error, and the mark
// stored that short output for good. Now the short read is an error,
// the mark stores none, and the evidence's read after the reap (the
// server quick again here) stores the whole output.
func TestSlowLiveStreamAtTheMarkStoresNoShortOutput(t *testing.T) {
	e := newEnv(t)
	const host, line = "markslow", "printed before the loss\n"
	o := startedWithOutput(t, e, host, line)
	testenv.WaitUntil(t, 10*time.Second, "the output in the live stream", func() bool {
		p, err := e.q.PartialOutput(t.Context(), host, o.ID, 1<<20, 0)
		return err == nil && string(p.Stdout) == line
	})

	// The successor's connection delivers the live stream's messages
	// 3 s late (past a Fetch's 1 s wait and nats.go's second after it),
	// everything else at once: its lease and its orders are not slowed.
	addr, slow := testenv.SlowDeliveries(t, e.q.Conn().ConnectedAddr(), "$JS.ACK."+queue.LiveStream+".", 3*time.Second)
	wq := testenv.Queue(t, "nats://"+addr, "successor", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	slow(true)
	var marked *postgres.PartialOutput
	store := &interruptsThen{Store: e.store, first: func(out *postgres.PartialOutput) {
		marked = out
		slow(false) // for the evidence's read, after the reap
	}}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, wq, testenv.Logger(t))
	e.waitStatus(o.ID, order.StatusInterrupted)
	testenv.WaitUntil(t, 30*time.Second, "the attempt's reaped event", func() bool {
		return len(reapedEvents(t, e, o.ID)) == 1
	})
	got, err := e.store.GetOrder(t.Context(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result == nil || string(got.Result.Stdout.Content) != line {
		var brought string
		if marked != nil {
			brought = string(marked.Stdout)
		}
		t.Fatalf("the interrupted order holds result %+v (its mark brought stdout %q), want the live stream's stdout %q", got.Result, brought, line)
	}
	if marked != nil {
		t.Fatalf("the mark brought stdout %q from a read the slow server had not finished, want none", marked.Stdout)
	}
}
