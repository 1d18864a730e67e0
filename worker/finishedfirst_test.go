package worker_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFinishedEventBeforeAck: the worker publishes an order's finished
// event, which a waiting request answers on, before the order's ack, so
// that the event does not wait behind the ack's send and the server's
// handling of it (docs/benchmarks.md, "One sync order's wall-clock
// timeline"). Both leave on the worker's one connection, and the server
// passes one connection's messages on in the order it read them: a
// subscriber to both sees them in the order the worker sent them, on
// the direct path (an order alone) and on the pipelined one (a result
// written with the next order's claim).
func TestFinishedEventBeforeAck(t *testing.T) {
	url := testenv.NATS(t)
	store, _ := testenv.Store(t, testenv.Postgres(t))
	e := &env{t: t, store: store, q: testenv.Queue(t, url, "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	nc := testenv.JetStream(t, url, "watcher").Conn()
	seen := make(chan *nats.Msg, 256)
	for _, subject := range []string{"$JS.ACK.>", queue.EventsSubject + "order.*"} {
		if _, err := nc.ChanSubscribe(subject, seen); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.start("order", nil)

	// A slow order first, so that the two after it wait in the stream:
	// the second's result is written with the third's claim.
	ids := []uuid.UUID{e.submit("order", "sleep", "0.3"), e.submit("order", "true"), e.submit("order", "true")}
	var sent []string // "finished <id>" and "ack", in the order seen
	acks := 0
	for deadline := time.After(30 * time.Second); acks < len(ids); {
		select {
		case m := <-seen:
			if strings.HasPrefix(m.Subject, "$JS.ACK.") {
				if string(m.Data) == "+ACK" {
					acks++
					sent = append(sent, "ack")
				}
				continue
			}
			var ev queue.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type == "finished" {
				sent = append(sent, "finished "+ev.OrderID.String())
			}
		case <-deadline:
			t.Fatalf("%d acks of %d orders seen: %q", acks, len(ids), sent)
		}
	}
	var want []string
	for _, id := range ids {
		want = append(want, "finished "+id.String(), "ack")
	}
	if strings.Join(sent, ", ") != strings.Join(want, ", ") {
		t.Errorf("the worker sent %q; want each order's finished event before its ack: %q", sent, want)
	}
	for _, id := range ids {
		e.waitStatus(id, order.StatusSucceeded)
	}
}
