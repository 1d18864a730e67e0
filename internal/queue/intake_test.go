package queue_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

func newQueue(t *testing.T) (*queue.Queue, *nats.Conn) {
	t.Helper()
	nc, err := queue.Connect(testenv.NATS(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.New(testenv.Context(t), nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return q, nc
}

// TestIntakeConsumerUpgrade: the shared, unpinned intake consumer of an
// older orderly is replaced by the pinned one, and a submission it held
// unacknowledged is delivered by the new one.
func TestIntakeConsumerUpgrade(t *testing.T) {
	ctx := testenv.Context(t)
	q, nc := newQueue(t)
	js := q.JetStream()
	old, err := js.CreateOrUpdateConsumer(ctx, queue.SubmitStream, jetstream.ConsumerConfig{
		Durable: queue.IntakeConsumerName, FilterSubject: queue.SubmitSubject + ">",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 64, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(queue.SubmitSubject+"h", []byte("held")); err != nil {
		t.Fatal(err)
	}
	batch, err := old.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() { // held, never acked
	}

	c, err := q.IntakeConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if cfg.PriorityPolicy != jetstream.PriorityPolicyPinned || cfg.PinnedTTL != queue.IntakePinnedTTL {
		t.Fatalf("intake consumer config: %+v", cfg)
	}
	if _, err := q.IntakeConsumer(ctx); err != nil {
		t.Fatalf("second replica: %v", err)
	}
	msgs, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(queue.IntakeGroup))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range msgs.Messages() {
		got = append(got, string(m.Data()))
	}
	if len(got) != 1 || got[0] != "held" {
		t.Fatalf("delivered %q, want the held submission", got)
	}
}

// TestRewindIntake: a rewind delivers the unacknowledged submissions again
// at once, in stream order, to the pinned client, without waiting for the
// ack timer; IntakePinned tells the pinned client from any other.
func TestRewindIntake(t *testing.T) {
	ctx := testenv.Context(t)
	q, nc := newQueue(t)
	c, err := q.IntakeConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1", "2", "3"} {
		if err := nc.Publish(queue.SubmitSubject+"h", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	it, err := c.Messages(jetstream.PullPriorityGroup(queue.IntakeGroup), jetstream.PullExpiry(queue.IntakePullExpiry))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	next := func() jetstream.Msg {
		t.Helper()
		m, err := it.Next(jetstream.NextMaxWait(30 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	first := next()
	pin := first.Headers().Get("Nats-Pin-Id")
	if ok, err := q.IntakePinned(ctx, pin); err != nil || !ok {
		t.Fatalf("IntakePinned(own pin) = %v, %v", ok, err)
	}
	if ok, _ := q.IntakePinned(ctx, "someone-else"); ok {
		t.Fatal("IntakePinned accepted another pin")
	}
	// Confirmed: a plain ack is applied by the server's consumer apart
	// from the API request that rewinds it, and at a load average of 30
	// the rewind came first; "1", acknowledged but above the ack floor
	// still, was delivered again (hH24). The API's intake is idempotent
	// on such a delivery; the test counts deliveries, so it waits.
	if err := first.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	next() // "2" and "3" delivered, held unacknowledged
	next()
	// Stopped and its subscription gone before the rewind, as the API
	// does: a pull request whose inbox still has interest would take the
	// redelivered "2" for a client that left.
	queue.StopIterator(it)

	through, _, err := q.RewindIntake(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if through != 3 {
		t.Fatalf("delivered through %d, want 3", through)
	}
	it, err = c.Messages(jetstream.PullPriorityGroup(queue.IntakeGroup), jetstream.PullExpiry(queue.IntakePullExpiry))
	if err != nil {
		t.Fatal(err)
	}
	// Delivered anew (a first delivery), not again by the ack timer
	// (IntakeAckWait): counted, not timed.
	for _, want := range []string{"2", "3"} {
		m := next()
		if string(m.Data()) != want {
			t.Fatalf("after the rewind got %q, want %q", m.Data(), want)
		}
		if meta, err := m.Metadata(); err != nil || meta.NumDelivered != 1 {
			t.Fatalf("%q after the rewind: delivery %+v (%v), want its first: the ack timer redelivered it, not the rewind", want, meta, err)
		}
	}
}

// TestSubmitBacklogIsBounded: NATS submissions waiting for the intake are
// bounded per host (and in bytes): a publisher with the submitter's
// credential could fill JetStream's disk, which the orders stream shares.
// A publish past a host's bound is refused; another host's still goes
// in. A stream made by an orderly before the bound is updated to it.
func TestSubmitBacklogIsBounded(t *testing.T) {
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	js := testenv.JetStream(t, url, "older")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: queue.SubmitStream, Subjects: []string{queue.SubmitSubject + ">"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: queue.SubmitDedupWindow}); err != nil {
		t.Fatal(err)
	}
	testenv.Queue(t, url, "api", queue.Options{SubmitBacklog: 3})
	for i := range 3 {
		if _, err := js.Publish(ctx, queue.SubmitSubject+"flooded", []byte(`{"command":"true"}`)); err != nil {
			t.Fatalf("submission %d of 3: %v", i+1, err)
		}
	}
	if _, err := js.Publish(ctx, queue.SubmitSubject+"flooded", []byte(`{"command":"true"}`)); err == nil {
		t.Fatal("a fourth waiting submission for the host was stored")
	}
	if _, err := js.Publish(ctx, queue.SubmitSubject+"other", []byte(`{"command":"true"}`)); err != nil {
		t.Fatalf("another host's submission: %v", err)
	}
	st, err := js.Stream(ctx, queue.SubmitStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxBytes != queue.SubmitMaxBytes || cfg.Discard != jetstream.DiscardNew {
		t.Fatalf("stream bounds: %d bytes, discard %v", cfg.MaxBytes, cfg.Discard)
	}
}

// TestIntakeConsumerStateInMemory: on a server that is not clustered the
// intake consumer keeps its state in memory; with the stream's sync always
// nats-server otherwise rewrote its state file (a synchronous write, a
// rename and a directory fsync) about once per NATS submission. The pinned
// consumer an older orderly created on disk cannot be updated (nats-server
// refuses a storage change): it is replaced, and what it held unacked, or
// had not delivered yet, comes from the new one in stream order; the
// replica that replaced it warns that older replicas take no NATS
// submissions until they are upgraded.
func TestIntakeConsumerStateInMemory(t *testing.T) {
	ctx := testenv.Context(t)
	var logs bytes.Buffer
	q, nc := openQueue(t, queue.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	js := q.JetStream()
	old, err := js.CreateOrUpdateConsumer(ctx, queue.SubmitStream, jetstream.ConsumerConfig{
		Durable: queue.IntakeConsumerName, FilterSubject: queue.SubmitSubject + ">",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: queue.IntakeAckWait, MaxAckPending: 256, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy, PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{queue.IntakeGroup}, PinnedTTL: queue.IntakePinnedTTL,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"held", "waiting"} {
		if err := nc.Publish(queue.SubmitSubject+"h", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := old.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(queue.IntakeGroup))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() { // held, never acked
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, queue.SubmitStream, jetstream.ConsumerConfig{
		Durable: queue.IntakeConsumerName, FilterSubject: queue.SubmitSubject + ">",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: queue.IntakeAckWait, MaxAckPending: 256, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy, PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{queue.IntakeGroup}, PinnedTTL: queue.IntakePinnedTTL, MemoryStorage: true,
	}); err == nil {
		t.Fatal("nats-server changed the storage of an existing consumer: IntakeConsumer need not replace it")
	} else {
		t.Logf("updating it in place: %v", err)
	}

	c, err := q.IntakeConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !c.CachedInfo().Config.MemoryStorage {
		t.Fatal("the intake consumer keeps its state on disk")
	}
	// An older replica still running only logs nats-server's refusal:
	// the replica that replaced the consumer says what that means.
	if !strings.Contains(logs.String(), "replaced the NATS intake consumer an older orderly made") ||
		!strings.Contains(logs.String(), "until they are upgraded") {
		t.Fatalf("the replacing replica logged %q; want the replacement and what to do", logs.String())
	}
	if again, err := q.IntakeConsumer(ctx); err != nil || !again.CachedInfo().Config.MemoryStorage {
		t.Fatalf("second replica: %v", err)
	}
	msgs, err := c.Fetch(2, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(queue.IntakeGroup))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range msgs.Messages() {
		got = append(got, string(m.Data()))
	}
	if len(got) != 2 || got[0] != "held" || got[1] != "waiting" {
		t.Fatalf("delivered %q, want the held submission, then the waiting one", got)
	}
}
