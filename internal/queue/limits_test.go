package queue_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// ordersRetention is the orders stream's retention.
func ordersRetention(t *testing.T, q *queue.Queue) jetstream.RetentionPolicy {
	t.Helper()
	st, err := q.JetStream().Stream(testenv.Context(t), queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.Retention
}

func ackSync(t *testing.T, msgs ...jetstream.Msg) {
	t.Helper()
	for _, m := range msgs {
		if err := m.DoubleAck(testenv.Context(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOrdersStreamKeepsAcksUntilPurged: on a single server the orders
// stream has limits retention, so an ack writes nothing (a work queue
// wrote and fsynced a tombstone per order). Acknowledged orders stay until
// PurgeAcked removes them up to each host's ack floor, never one that is
// not acknowledged; a consumer renewed by a takeover starts past the old
// one's floor, and one lost (a restart) at the first message still stored.
func TestOrdersStreamKeepsAcksUntilPurged(t *testing.T) {
	q, _ := openQueue(t, queue.Options{AckWait: time.Minute})
	ctx := testenv.Context(t)
	if r := ordersRetention(t, q); r != jetstream.LimitsPolicy {
		t.Fatalf("orders stream retention %v, want limits on a single server", r)
	}
	ids, c := publishOrders(t, q, "p1", 5)
	other, _ := publishOrders(t, q, "p2", 2) // nothing of it acknowledged

	msgs, got := fetchIDs(t, c, 2, 5*time.Second)
	if !equalIDs(got, ids[:2]) {
		t.Fatalf("got %v, want %v", got, ids[:2])
	}
	ackSync(t, msgs...)
	msgs, got = fetchIDs(t, c, 2, 5*time.Second)
	if !equalIDs(got, ids[2:4]) {
		t.Fatalf("got %v, want %v", got, ids[2:4])
	}
	ackSync(t, msgs[0]) // ids[3] stays delivered, unacknowledged
	if n := streamMsgs(t, q); n != 7 {
		t.Fatalf("stream holds %d messages, want all 7: an ack only moves the ack floor", n)
	}

	// A takeover's renewal: the unacknowledged order first, none before it.
	r, err := q.RenewHostConsumer(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	msgs, got = fetchIDs(t, r, 2, 5*time.Second)
	if !equalIDs(got, ids[3:5]) {
		t.Fatalf("renewed consumer gave %v, want %v: the acknowledged ones again, or one skipped", got, ids[3:5])
	}
	ackSync(t, msgs[0]) // ids[4] stays unacknowledged

	if _, err := q.PurgeAcked(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, q); n != 3 {
		t.Fatalf("after the purge the stream holds %d messages, want 3 (p1's unacknowledged one, p2's two)", n)
	}
	if _, err := q.PurgeAcked(ctx); err != nil { // nothing moved: nothing purged
		t.Fatal(err)
	}
	if n := streamMsgs(t, q); n != 3 {
		t.Fatalf("a second purge left %d messages, want 3", n)
	}

	// A consumer lost with the server's memory: created again at the first
	// message still stored, the one not acknowledged.
	if err := q.JetStream().DeleteConsumer(ctx, queue.OrdersStream, queue.ConsumerName("p1")); err != nil {
		t.Fatal(err)
	}
	n, err := q.HostConsumer(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if _, got = fetchOnly(t, n, 1); !equalIDs(got, ids[4:5]) {
		t.Fatalf("consumer created again gave %v, want %v", got, ids[4:5])
	}
	c2, err := q.HostConsumer(ctx, "p2")
	if err != nil {
		t.Fatal(err)
	}
	if _, got = fetchIDs(t, c2, 2, 5*time.Second); !equalIDs(got, other) {
		t.Fatalf("p2's consumer gave %v, want %v", got, other)
	}
}

// TestOrdersWorkQueueKept: nats-server refuses to change a stream's
// retention, so the work-queue stream of an orderly from before stays one
// (docs/deploy.md, "Upgrading"), the API's start says so in an info line
// that names the switch's steps, and a takeover's renewal, whose start
// sequence a work queue refuses, still hands back what was held.
func TestOrdersWorkQueueKept(t *testing.T) {
	url := testenv.NATS(t)
	nc, err := queue.Connect(url, "queue-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: queue.OrdersStream, Subjects: []string{queue.OrdersSubject + ">"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	q, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("an existing work-queue orders stream: %v", err)
	}
	if r := ordersRetention(t, q); r != jetstream.WorkQueuePolicy {
		t.Fatalf("orders stream retention %v, want the work queue kept", r)
	}
	// The operator learns which kind the stream is, and where the switch
	// is written down.
	if !strings.Contains(logs.String(), "the orders stream is a work queue") || !strings.Contains(logs.String(), "nats stream rm ORDERLY_ORDERS") {
		t.Fatalf("the API's start logged %q; want the work queue named and the switch's steps", logs.String())
	}
	ids, c := publishOrders(t, q, "w1", 3)
	msgs, _ := fetchIDs(t, c, 2, 5*time.Second)
	ackSync(t, msgs[0])
	r, err := q.RenewHostConsumer(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if _, got := fetchIDs(t, r, 2, 5*time.Second); !equalIDs(got, ids[1:]) {
		t.Fatalf("renewed consumer gave %v, want %v", got, ids[1:])
	}
	if _, err := q.PurgeAcked(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, q); n != 2 {
		t.Fatalf("work queue holds %d messages, want the 2 unacknowledged", n)
	}
}

// TestPurgeAckedAfterTheStreamIsCreatedAgain: a stream deleted and created
// again (reensure) numbers its messages from 1, and the host's consumer
// created again has a floor below the one PurgeAcked last purged to; it
// skipped such a host until its floor passed the old one, and its
// acknowledged orders stayed.
func TestPurgeAckedAfterTheStreamIsCreatedAgain(t *testing.T) {
	q, _ := openQueue(t, queue.Options{AckWait: time.Minute})
	ctx := testenv.Context(t)
	_, c := publishOrders(t, q, "s1", 3)
	msgs, _ := fetchIDs(t, c, 2, 5*time.Second)
	ackSync(t, msgs...)
	msgs, _ = fetchIDs(t, c, 2, 5*time.Second)
	ackSync(t, msgs...)
	if _, err := q.PurgeAcked(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages after the purge, want 0", n)
	}
	if err := q.JetStream().DeleteStream(ctx, queue.OrdersStream); err != nil {
		t.Fatal(err)
	}
	if err := q.CheckStreams(ctx); err != nil {
		t.Fatal(err)
	}
	_, c = publishOrders(t, q, "s1", 2)
	msgs, _ = fetchIDs(t, c, 2, 5*time.Second)
	ackSync(t, msgs...)
	if _, err := q.PurgeAcked(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d acknowledged messages left in the stream created again", n)
	}
}
