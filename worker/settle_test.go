package worker_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestPipelinedOrderSettlesAfterTheNextStart: in a backlog, an order
// whose result committed with the next order's claim has its finished
// event and its ack sent once the next order has started (with that
// order's started event), not between its exit and that start, the
// worker's serial path. Counted as the messages the worker's NATS
// connection published from an order's exit (after_exec) to the next
// order's claim being taken up (after_claim): two before (the event and
// the ack), none now but what the worker's other goroutines send
// meanwhile (a pull request, a heartbeat), so the fewest over the
// backlog is zero. Every order still ends succeeded with its message
// acked.
func TestPipelinedOrderSettlesAfterTheNextStart(t *testing.T) {
	e := newEnvAckWait(t, 30*time.Second)
	const n = 12
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.submit("settle", "true")
	}
	nc := e.q.Conn()
	var (
		mu     sync.Mutex
		exited uint64 // OutMsgs at the last order's exit; 0: none yet
		path   []uint64
	)
	runWorker(t, worker.Options{Host: "settle", Heartbeat: 200 * time.Millisecond, AckWait: 30 * time.Second,
		ShutdownGrace: 5 * time.Second, RecordWait: time.Minute, NextWait: time.Minute,
		FailPoint: func(p string, o *order.Order) error {
			mu.Lock()
			defer mu.Unlock()
			switch p {
			case "after_exec":
				exited = nc.Stats().OutMsgs
			case "after_claim":
				if exited != 0 {
					path = append(path, nc.Stats().OutMsgs-exited)
				}
			}
			return nil
		}}, e.store, e.q, testenv.Logger(t))
	for _, id := range ids {
		e.waitStatus(id, order.StatusSucceeded)
	}
	cons, err := e.q.JetStream().Consumer(t.Context(), queue.OrdersStream, "host_settle")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "every order's message acked", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(path) != n-1 {
		t.Fatalf("%d orders claimed after another's exit, want %d", len(path), n-1)
	}
	if least := slices.Min(path); least != 0 {
		t.Fatalf("messages the worker published between an order's exit and the next order's start: %v, fewest %d; want none on that path (the order's finished event and ack after the next start)",
			path, least)
	}
	t.Logf("messages published between an order's exit and the next one's start: %v", path)
}
