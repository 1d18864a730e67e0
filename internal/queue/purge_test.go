package queue_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// purgeFleet is a queue on its own server with hosts whose consumers each
// ran one order, purged by a first round (the one at start), and a count
// of the JetStream API requests made from then on.
func purgeFleet(t *testing.T, opts queue.Options, hosts int) (*queue.Queue, string, map[string]jetstream.Consumer, []string, *jsRequests) {
	t.Helper()
	url := testenv.NATS(t)
	nc, err := queue.Connect(url, "purge-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	q, err := queue.New(ctx, nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, hosts)
	consumers := map[string]jetstream.Consumer{}
	for i := range names {
		names[i] = fmt.Sprintf("f%02d", i)
		if consumers[names[i]], err = q.HostConsumer(ctx, names[i]); err != nil {
			t.Fatal(err)
		}
	}
	runOrders(t, q, consumers, names)
	if n, err := q.PurgeAcked(ctx); err != nil || n != hosts {
		t.Fatalf("the first round purged %d hosts (%v), want all %d", n, err, hosts)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages after the first round, want 0", n)
	}
	return q, url, consumers, names, countJSRequests(t, url)
}

// requestsOf runs a purge round and returns how many hosts it purged and
// the JetStream API requests it made, by kind.
func requestsOf(t *testing.T, q *queue.Queue, reqs *jsRequests) (purged int, infos, lists, purges int64) {
	t.Helper()
	reqs.sync(t, q.Conn())
	i0, l0, p0 := reqs.of("CONSUMER.INFO."), reqs.of("CONSUMER.LIST."), reqs.of("STREAM.PURGE.")
	purged, err := q.PurgeAcked(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	reqs.sync(t, q.Conn())
	return purged, reqs.of("CONSUMER.INFO.") - i0, reqs.of("CONSUMER.LIST.") - l0, reqs.of("STREAM.PURGE.") - p0
}

// TestPurgeAckedFollowsActivity: a round reads the consumer of the host
// this API published to and purges it, and neither reads nor purges the
// hosts that ran nothing since. It listed every consumer each round, and
// purged again every host it had purged once: the purge that empties a
// host's subject moves its consumer's ack floor to the stream's last
// sequence, which the next round took for acknowledgements.
func TestPurgeAckedFollowsActivity(t *testing.T) {
	q, _, consumers, hosts, reqs := purgeFleet(t, queue.Options{AckWait: time.Minute}, 12)

	runOrders(t, q, consumers, hosts[3:4])
	purged, infos, lists, purges := requestsOf(t, q, reqs)
	if purged != 1 || purges != 1 {
		t.Fatalf("%d hosts purged, %d purge requests; want 1 and 1, the host that ran an order", purged, purges)
	}
	if infos != 1 || lists != 0 {
		t.Fatalf("%d consumer infos and %d listings read; want 1 and 0: the hosts that ran nothing cost nothing", infos, lists)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages after the round, want 0", n)
	}

	// Nothing ran since: a round sends nothing.
	reqs.sync(t, q.Conn())
	r0 := reqs.all.Load()
	if n, err := q.PurgeAcked(testenv.Context(t)); err != nil || n != 0 {
		t.Fatalf("an idle round purged %d hosts (%v)", n, err)
	}
	reqs.sync(t, q.Conn())
	if r := reqs.all.Load() - r0; r != 0 {
		t.Fatalf("an idle round made %d JetStream API requests, want 0", r)
	}
}

// TestPurgeAckedAwaitsTheAck: an order published and not yet acknowledged
// at a round (it runs) is purged at a later round once it is, with no new
// publish; nothing unacknowledged is purged meanwhile.
func TestPurgeAckedAwaitsTheAck(t *testing.T) {
	q, _, consumers, hosts, reqs := purgeFleet(t, queue.Options{AckWait: time.Minute}, 3)
	ctx := testenv.Context(t)
	if _, err := q.Publish(ctx, hosts[1], uuid.Must(uuid.NewV7())); err != nil {
		t.Fatal(err)
	}
	msgs, _ := fetchIDs(t, consumers[hosts[1]], 1, 30*time.Second) // at once, unless the machine stalls
	if len(msgs) != 1 {
		t.Fatalf("%d deliveries of the order, want 1", len(msgs))
	}
	if purged, _, _, _ := requestsOf(t, q, reqs); purged != 0 {
		t.Fatalf("%d hosts purged while their order ran", purged)
	}
	if n := streamMsgs(t, q); n != 1 {
		t.Fatalf("%d messages, want the running order's", n)
	}
	ackSync(t, msgs...)
	testenv.WaitUntil(t, 10*time.Second, "the acknowledged order purged", func() bool {
		if _, err := q.PurgeAcked(ctx); err != nil {
			t.Fatal(err)
		}
		return streamMsgs(t, q) == 0
	})
}

// TestPurgeAckedBackstop: orders another API replica published (or this
// one before a restart) leave no mark here; the listing of every consumer
// every PurgeListEvery purges them, and only the host that acknowledged
// something since its last purge.
func TestPurgeAckedBackstop(t *testing.T) {
	q, url, _, hosts, reqs := purgeFleet(t, queue.Options{AckWait: time.Minute, PurgeListEvery: 500 * time.Millisecond}, 6)
	nc, err := queue.Connect(url, "other-replica")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	other, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	c, err := other.HostConsumer(ctx, hosts[2])
	if err != nil {
		t.Fatal(err)
	}
	runOrders(t, other, map[string]jetstream.Consumer{hosts[2]: c}, hosts[2:3])
	if n := streamMsgs(t, q); n != 1 {
		t.Fatalf("%d messages, want the other replica's acknowledged order", n)
	}
	var purged int
	var lists, purges int64
	testenv.WaitUntil(t, 10*time.Second, "the listing purges the other replica's host", func() bool {
		purged, _, lists, purges = requestsOf(t, q, reqs)
		return lists > 0
	})
	if purged != 1 || purges != 1 {
		t.Fatalf("the listing purged %d hosts in %d requests; want 1 and 1, the one that acknowledged an order", purged, purges)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages after the listing, want 0", n)
	}
}

// TestPurgeAckedOnceForTwoReplicas: two API replicas published orders of
// the same host; the first to purge it does, and the other reads that
// nothing of the host's is left at or below the floor and sends no
// purge, which walks every consumer of the stream.
func TestPurgeAckedOnceForTwoReplicas(t *testing.T) {
	q, url, consumers, hosts, reqs := purgeFleet(t, queue.Options{AckWait: time.Minute}, 4)
	nc, err := queue.Connect(url, "other-replica")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	other, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.PurgeAcked(ctx); err != nil { // its first round
		t.Fatal(err)
	}
	runOrders(t, q, consumers, hosts[1:2])
	runOrders(t, other, consumers, hosts[1:2])
	if purged, _, _, purges := requestsOf(t, q, reqs); purged != 1 || purges != 1 {
		t.Fatalf("the first replica purged %d hosts in %d requests, want 1 and 1", purged, purges)
	}
	if purged, infos, _, purges := requestsOf(t, other, reqs); purged != 0 || purges != 0 || infos != 1 {
		t.Fatalf("the second replica purged %d hosts in %d requests after %d consumer infos; want 0, 0 and 1", purged, purges, infos)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages left, want 0", n)
	}
}
