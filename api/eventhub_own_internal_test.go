package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestOwnWorkersEndWakesTheWaiterOnce: where the API and its worker share
// a Queue (serve), a waiter is handed its order's end by the goroutine
// that publishes it, before PublishEvent returns: no goroutine hand-off
// between them, where the bus took five (docs/benchmarks.md, the
// thirty-eighth round). The same end then comes back from the bus and is
// not handed over again: one wake-up of the waiter per order.
func TestOwnWorkersEndWakesTheWaiterOnce(t *testing.T) {
	q := testenv.Queue(t, testenv.NATS(t), "own-ends", queue.Options{})
	s := New(Deps{Queue: q})
	id, marker := uuid.New(), uuid.New()
	ch, stop, err := s.events.wait(q.Conn(), "web1", id)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	markerCh, stopMarker, err := s.events.wait(q.Conn(), "web1", marker)
	if err != nil {
		t.Fatal(err)
	}
	defer stopMarker()

	// The worker's order started, then ended: only the end is a waiter's.
	if err := q.PublishEvent(queue.Event{OrderID: id, Type: "started", Status: "running", Host: "web1"}); err != nil {
		t.Fatal(err)
	}
	if err := q.PublishEvent(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "web1"}); err != nil {
		t.Fatal(err)
	}
	if n := len(ch); n != 1 {
		t.Fatalf("ends handed to the waiter by the publishing goroutine: %d, want 1", n)
	}

	// The bus's copy of the end comes through the hub's subscription, in
	// the order published: once another order's end published after it
	// on the bus alone has arrived, so has the copy.
	data, _ := json.Marshal(queue.Event{OrderID: marker, Type: "finished", Status: "failed", Host: "web1"})
	if err := q.Conn().Publish(queue.EventSubjectOf("web1", marker), data); err != nil {
		t.Fatal(err)
	}
	select {
	case <-markerCh:
	case <-time.After(10 * time.Second):
		t.Fatal("the bus's end of the other order: not within 10s")
	}
	if n := len(ch); n != 1 {
		t.Fatalf("the waiter holds %d ends of its order once the bus's copy came, want 1", n)
	}
	if ev := <-ch; ev.OrderID != id || ev.Status != "succeeded" {
		t.Fatalf("the waiter got %+v", ev)
	}
}

// TestOwnWorkersEndWaitsForNoSubscribe: serve's worker hands its order's
// end to the API's waiters on the goroutine that publishes it
// (queue.HearOwnEnds), which must not wait on the bus. The first wait of
// a process subscribes and flushes, a round trip that a NATS that does
// not answer holds for nats.go's ten seconds: made under the lock the
// hand-over takes, it held the worker's PublishEvent (and its ack, its
// next order) until the flush gave up.
func TestOwnWorkersEndWaitsForNoSubscribe(t *testing.T) {
	proxy := testenv.NewCutProxy(t, strings.TrimPrefix(testenv.NATS(t), "nats://"))
	q := testenv.Queue(t, "nats://"+proxy.Addr(), "own-ends-unanswered", queue.Options{})
	s := New(Deps{Queue: q})
	// The server's answers are lost from here on: the first wait's
	// flush is never answered.
	proxy.Drop(false)
	waited := make(chan error, 1)
	go func() {
		_, stop, err := s.events.wait(q.Conn(), "web1", uuid.New())
		if err == nil {
			stop()
		}
		waited <- err
	}()
	testenv.WaitUntil(t, 10*time.Second, "the first wait's flush sent, its answer dropped", func() bool {
		return proxy.Dropped([]byte("PONG"))
	})

	published := make(chan error, 1)
	go func() {
		published <- q.PublishEvent(queue.Event{OrderID: uuid.New(), Type: "finished", Status: "succeeded", Host: "web1", Alone: true})
	}()
	select {
	case err := <-published:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-waited:
		t.Fatalf("the worker's end was held until the API's first wait gave up its subscribe (%v)", err)
	}
	// The wait, still flushing, is let go: its connection is cut.
	proxy.Cut()
	if err := <-waited; errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("the worker's end was handed over only once the first wait's subscribe had timed out: %v", err)
	}
}
