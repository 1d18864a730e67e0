package queue_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishEventSendsWhatItSent: on the wire, an order's events are
// json.Marshal's bytes on the order's subject, the finished one with the
// TTL header and no rollup (the live stream takes none), and nothing
// else, on the output subject neither; two queues with their own TTLs
// keep theirs. A finished event's Committed order (serve's read-back)
// adds nothing to the bytes.
func TestPublishEventSendsWhatItSent(t *testing.T) {
	q, nc := openQueue(t, queue.Options{FinishedTTL: 90 * time.Second})
	q2, err := queue.Bind(testenv.Context(t), nc, queue.Options{FinishedTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	events, err := nc.SubscribeSync(queue.EventSubjectOf("web1", id))
	if err != nil {
		t.Fatal(err)
	}
	output, err := nc.SubscribeSync(queue.OutputSubjectOf("web1", id))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ends := func(ttl string) nats.Header {
		h := nats.Header{}
		h.Set(jetstream.MsgTTLHeader, ttl)
		return h
	}
	next := func(sub *nats.Subscription, want []byte, header nats.Header) {
		t.Helper()
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.Data, want) {
			t.Errorf("%s: data %q, want %q", m.Subject, m.Data, want)
		}
		if !maps.EqualFunc(m.Header, header, slices.Equal) {
			t.Errorf("%s: headers %v, want %v", m.Subject, m.Header, header)
		}
	}
	for _, c := range []struct {
		q      *queue.Queue
		ev     queue.Event
		header nats.Header
	}{
		{q, queue.Event{OrderID: id, Type: "started", Status: "running", Host: "web1"}, nil},
		{q, queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "web1"}, ends("1m30s")},
		{q2, queue.Event{OrderID: id, Type: "finished", Status: "failed", Host: "web1"}, ends("2s")},
		{q, queue.Event{OrderID: id, Type: "interrupted", Status: "queued", Host: "web1"}, nil},
		// The order a serve worker's commit wrote goes to its own
		// hearers only (HearOwnEnds), never on the bus.
		{q, queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "web1",
			Committed: &order.Order{ID: id, Status: order.StatusSucceeded, Command: "hj30-not-on-the-bus"}}, ends("1m30s")},
	} {
		if err := c.q.PublishEvent(c.ev); err != nil {
			t.Fatal(err)
		}
		plain := c.ev
		plain.Committed = nil
		want, _ := json.Marshal(plain)
		next(events, want, c.header)
	}
	if m, err := output.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("%s: %v: events publish nothing on the output subject", m.Subject, m.Header)
	}
}

// TestPublishEventAllocations: an order's started event takes at most 2
// allocations, its finished one (with the live stream's TTL
// header) at most 4. They took 5 and 10: json.Marshal's three (the
// event boxed, the id's text, the copy returned), the subject's two (now
// one), and the finished event's headers set anew (three, now shared).
// The counts are 1 and 3 here (the subject; nats.go's header bytes); the
// bound leaves one for the in-process nats-server, which AllocsPerRun
// counts too: it is kept to its one allocation per message that nobody
// stores (ORDERLY_LIVE is deleted, so JetStream stores no event
// meanwhile), and the fewest of three measures counts. A finished event
// that is not alone is followed by its end on FreeSubjectOf (hA24):
// three more (its subject, its message, nats.go's header bytes) and the
// server's one, 6 here, only for an order that leaves live output to
// free; the finished event of an order that printed nothing (alone) is
// sent alone, 3 as before.
func TestPublishEventAllocations(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	if err := q.JetStream().DeleteStream(testenv.Context(t), queue.LiveStream); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	for _, c := range []struct {
		typ, status string
		alone       bool
		max         float64
	}{
		{"started", "running", false, 2},
		{"finished", "succeeded", true, 4},
		{"finished", "succeeded", false, 7},
	} {
		ev := queue.Event{OrderID: id, Type: c.typ, Status: c.status, Host: "web1", Alone: c.alone}
		fewest := -1.0
		for range 3 {
			n := testing.AllocsPerRun(200, func() {
				if err := q.PublishEvent(ev); err != nil {
					t.Fatal(err)
				}
			})
			if fewest < 0 || n < fewest {
				fewest = n
			}
		}
		t.Logf("%s event (alone %v): %.0f allocations", c.typ, c.alone, fewest)
		if fewest > c.max {
			t.Errorf("%s event (alone %v): %.0f allocations, want at most %.0f", c.typ, c.alone, fewest, c.max)
		}
	}
}

// BenchmarkPublishEvent: an order's two events as the worker publishes
// them, into nats.go's buffer (the embedded server reads them meanwhile;
// the live stream keeps them, as in production).
func BenchmarkPublishEvent(b *testing.B) {
	nc, err := queue.Connect(testenv.NATS(b), "queue-bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	q, err := queue.New(testenv.Context(b), nc, queue.Options{})
	if err != nil {
		b.Fatal(err)
	}
	id := uuid.New()
	started := queue.Event{OrderID: id, Type: "started", Status: "running", Host: "web1"}
	finished := queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "web1"}
	b.ReportAllocs()
	for b.Loop() {
		if err := q.PublishEvent(started); err != nil {
			b.Fatal(err)
		}
		if err := q.PublishEvent(finished); err != nil {
			b.Fatal(err)
		}
	}
}
