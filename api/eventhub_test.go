package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestEventHubDeliversOnlyTheOrdersOwnHostSubject: two waiters share one
// subscription; each gets its own order's end (no started event), an
// event for its order on another host's subject is not delivered, and
// after stop nothing is.
func TestEventHubDeliversOnlyTheOrdersOwnHostSubject(t *testing.T) {
	nc, err := nats.Connect(testenv.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var h eventHub
	a, b := uuid.New(), uuid.New()
	chA, stopA, err := h.wait(nc, "web1", a)
	if err != nil {
		t.Fatal(err)
	}
	chB, stopB, err := h.wait(nc, "web2", b)
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	if h.sub == nil || len(h.waiters) != 2 {
		t.Fatalf("want one subscription and two waiters, got %v and %d", h.sub, len(h.waiters))
	}
	publish := func(host string, ev queue.Event) {
		t.Helper()
		data, _ := json.Marshal(ev)
		if err := nc.Publish(queue.EventSubjectOf(host, ev.OrderID), data); err != nil {
			t.Fatal(err)
		}
	}
	// web2's worker cannot publish on web1's subjects, but here it tries on
	// its own: an event about a on web2's subject must not reach a's waiter.
	publish("web2", queue.Event{OrderID: a, Type: "finished", Status: "succeeded", Host: "web2"})
	// The started event is no waiter's business: every waiter waits for
	// the end, and one handed over woke it for nothing.
	publish("web1", queue.Event{OrderID: a, Type: "started", Status: "running", Host: "web1"})
	publish("web1", queue.Event{OrderID: a, Type: "finished", Status: "killed", Host: "web1"})
	publish("web2", queue.Event{OrderID: b, Type: "finished", Status: "failed", Host: "web2"})
	next := func(ch <-chan queue.Event) queue.Event {
		t.Helper()
		select {
		case ev := <-ch:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
		return queue.Event{}
	}
	if ev := next(chA); ev.OrderID != a || ev.Status != "killed" {
		t.Fatalf("a's waiter got %+v, want its finished event from web1 and no started event", ev)
	}
	if ev := next(chB); ev.OrderID != b || ev.Status != "failed" {
		t.Fatalf("b's waiter got %+v", ev)
	}
	stopA()
	publish("web1", queue.Event{OrderID: a, Type: "finished", Status: "succeeded", Host: "web1"})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// b's next event proves the subscription handled everything before it.
	publish("web2", queue.Event{OrderID: b, Type: "finished", Status: "succeeded", Host: "web2"})
	next(chB)
	select {
	case ev := <-chA:
		t.Fatalf("a's waiter got %+v after stop", ev)
	default:
	}
	h.mu.Lock()
	n := len(h.waiters)
	h.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d waiters left, want 1", n)
	}
}

// TestEventHubDeliverAllocations: the shared subscription's hand-off of an
// order's two events (started, skipped; finished, handed over) to its
// waiter. Decoded whole into queue.Event, the pair took 16 allocations;
// the waiters read only the order's id and status (12: encoding/json's
// decode state, its error context and field stack, the parse state and
// the status are each per event).
func TestEventHubDeliverAllocations(t *testing.T) {
	id := uuid.New()
	subject := queue.EventSubjectOf("h-1", id)
	ch := make(chan queue.Event, 8)
	h := &eventHub{waiters: map[string]waiter{subject: {id: id, ch: ch}}}
	msg := func(typ, status string) *nats.Msg {
		b, err := json.Marshal(queue.Event{OrderID: id, Type: typ, Status: status, Host: "h-1"})
		if err != nil {
			t.Fatal(err)
		}
		return &nats.Msg{Subject: subject, Data: b}
	}
	started, finished := msg("started", "running"), msg("finished", "succeeded")
	n := testing.AllocsPerRun(200, func() {
		h.deliver(started)
		h.deliver(finished)
		if ev := <-ch; ev.OrderID != id || ev.Status != "succeeded" || len(ch) != 0 {
			t.Fatalf("handed %+v (and %d more), want only the finished event", ev, len(ch))
		}
	})
	if n > 13 {
		t.Fatalf("%.0f allocations to hand over an order's two events, want at most 13", n)
	}
}
