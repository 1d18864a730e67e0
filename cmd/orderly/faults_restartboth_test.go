package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFaultsWorkerRestartedWithNATS: the worker of h1 and nats-server
// are killed together (SIGKILL: a machine's power, a container's
// restart) while the orders stream still holds the host's finished
// orders (no API ran to purge them), and both start again. The server
// lost the host's consumer (its state is in memory) and the worker its
// own record of what it acked. The new worker process makes the
// consumer again past the last order PostgreSQL records as claimed, not
// at the first message stored: it delivers that order again (which tells
// the worker the stream is the one it claimed from), then the order
// submitted after the restart; the finished orders before it are not
// delivered again, each read, refused a claim and acked before the new
// one (docs/decisions.md, hE25). Every order runs once, in order.
func TestFaultsWorkerRestartedWithNATS(t *testing.T) {
	const finished = 200
	s := newFaultStack(t)
	w := s.startWorker("h1")
	gate := filepath.Join(s.dir, "gate")
	// The first order holds the host until the API is gone: no purge
	// removes the orders acknowledged after it.
	ids := []string{submitCommand(t, s.apiURL, s.token, "h1", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.05; done`, "_", gate)}
	for range finished {
		ids = append(ids, submitCommand(t, s.apiURL, s.token, "h1", "true"))
	}
	s.killAPI()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitRestartOrders(t, s, ids)
	js := testenv.JetStream(t, s.natsURL, "test", s.apiNATS()...)
	testenv.WaitUntil(t, time.Minute, "the worker's acks of every order", func() bool {
		c, err := js.Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName("h1"))
		return err == nil && c.CachedInfo().NumAckPending == 0 && c.CachedInfo().NumPending == 0 &&
			c.CachedInfo().AckFloor.Stream >= uint64(len(ids))
	})

	w.signal(syscall.SIGKILL)
	s.nats.kill9()
	s.note("worker and nats-server kill9")
	s.nats.start()
	w = s.startWorker("h1")
	// What the finished orders delivered again cost: the time from the
	// consumer's creation until its ack floor is past them.
	var made time.Time
	testenv.WaitUntil(t, time.Minute, "the new worker acks up to the last finished order", func() bool {
		c, err := js.Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName("h1"))
		if err == nil && made.IsZero() {
			made = c.CachedInfo().Created
		}
		return err == nil && c.CachedInfo().AckFloor.Stream >= uint64(len(ids))
	})
	t.Logf("the new worker's consumer was past the finished orders %s after its creation", time.Since(made).Round(time.Millisecond))
	s.startAPI()
	sent := time.Now()
	id := submitCommand(t, s.apiURL, s.token, "h1", "true")
	o := waitRestartOrders(t, s, []string{id})[0]
	var info *jetstream.ConsumerInfo
	testenv.WaitUntil(t, time.Minute, "the host consumer's info", func() bool {
		c, err := js.Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName("h1"))
		if err == nil {
			info = c.CachedInfo()
		}
		return err == nil
	})
	t.Logf("the order submitted after the restart started %s after it was sent; the consumer made again delivered %d messages",
		o.started.Sub(sent).Round(time.Millisecond), info.Delivered.Consumer)
	if info.Delivered.Consumer > 2 {
		t.Errorf("the consumer made again delivered %d messages up to the new order (stream sequence %d); "+
			"want 2: the order claimed last, then the new one, not the %d finished orders before it",
			info.Delivered.Consumer, info.Delivered.Stream, finished)
	}
	rows, err := s.rows(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.status != "succeeded" || r.attempt != 1 {
			t.Errorf("order %s ended %s in attempt %d, want succeeded in 1", r.id, r.status, r.attempt)
		}
	}
}

// waitRestartOrders waits until the orders ids succeeded, reading
// PostgreSQL (the API may be down), and returns them.
func waitRestartOrders(t *testing.T, s *faultStack, ids []string) []pgOrder {
	t.Helper()
	var out []pgOrder
	testenv.WaitUntil(t, 2*time.Minute, "the orders succeed", func() bool {
		rows, err := s.rows(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]pgOrder{}
		for _, r := range rows {
			byID[r.id.String()] = r
		}
		out = out[:0]
		for _, id := range ids {
			r, ok := byID[id]
			if !ok || r.status != "succeeded" {
				return false
			}
			out = append(out, r)
		}
		return true
	})
	return out
}
