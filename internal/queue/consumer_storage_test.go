package queue_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestHostConsumerStateInMemory: on a server that is not clustered the
// host's consumer keeps its state in memory; with the stream's sync always
// nats-server otherwise rewrote its state file (a synchronous write, a
// rename and a directory fsync) 1.6 times per sync order. nats-server
// refuses to change an existing consumer's storage: one an older orderly
// created on disk is replaced by the delete and create of a new worker's
// takeover (RenewHostConsumer), not updated, and it keeps what is unacked.
func TestHostConsumerStateInMemory(t *testing.T) {
	q, _ := openQueue(t, queue.Options{AckWait: time.Minute})
	ctx := testenv.Context(t)
	_, c := publishOrders(t, q, "m1", 1)
	if !c.CachedInfo().Config.MemoryStorage {
		t.Fatal("the host's consumer keeps its state on disk")
	}

	// An older orderly's consumer: the same settings, on disk.
	want, _ := publishOrders(t, q, "m2", 2)
	if err := q.JetStream().DeleteConsumer(ctx, queue.OrdersStream, queue.ConsumerName("m2")); err != nil {
		t.Fatal(err)
	}
	old, err := q.JetStream().CreateConsumer(ctx, queue.OrdersStream, jetstream.ConsumerConfig{
		Durable: queue.ConsumerName("m2"), Description: "orders of host m2", FilterSubject: queue.OrdersSubject + "m2",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxAckPending: 2, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ids := fetchIDs(t, old, 1, 30*time.Second); !equalIDs(ids, want[:1]) {
		t.Fatalf("old consumer gave %v, want %v", ids, want[:1])
	}
	if _, err := q.HostConsumer(ctx, "m2"); err == nil {
		t.Fatal("nats-server changed the storage of an existing consumer: docs/deploy.md's upgrade note says it refuses")
	} else {
		t.Logf("updating it in place: %v", err)
	}
	r, err := q.RenewHostConsumer(ctx, "m2")
	if err != nil {
		t.Fatal(err)
	}
	if !r.CachedInfo().Config.MemoryStorage {
		t.Fatal("the renewed consumer keeps its state on disk")
	}
	if _, ids := fetchIDs(t, r, 2, 5*time.Second); !equalIDs(ids, want) {
		t.Fatalf("renewed consumer gave %v, want %v: what the old one held is lost", ids, want)
	}
}
