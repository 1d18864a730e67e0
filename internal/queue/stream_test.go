package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// openQueue is a Queue on a fresh embedded NATS server.
func openQueue(t *testing.T, opts queue.Options) (*queue.Queue, *nats.Conn) {
	t.Helper()
	nc, err := queue.Connect(testenv.NATS(t), "queue-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.New(testenv.Context(t), nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return q, nc
}

// fetchIDs fetches up to n messages of c, waiting at most wait, and returns
// them with their order ids.
func fetchIDs(t *testing.T, c jetstream.Consumer, n int, wait time.Duration) ([]jetstream.Msg, []uuid.UUID) {
	t.Helper()
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	var ids []uuid.UUID
	for m := range batch.Messages() {
		id, err := uuid.ParseBytes(m.Data())
		if err != nil {
			t.Fatalf("message %q is not an order id", m.Data())
		}
		msgs, ids = append(msgs, m), append(ids, id)
	}
	return msgs, ids
}

// fetchOnly fetches n messages of c, waiting for them as long as a loaded
// machine may take (they come at once otherwise), and checks that c has
// nothing more to deliver: counted, not left to a short fetch that would
// get fewer on a stall.
func fetchOnly(t *testing.T, c jetstream.Consumer, n int) ([]jetstream.Msg, []uuid.UUID) {
	t.Helper()
	msgs, ids := fetchIDs(t, c, n, 30*time.Second)
	info, err := c.Info(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 {
		t.Fatalf("%d more messages for %s after %d, want none", info.NumPending, info.Name, len(ids))
	}
	return msgs, ids
}

// publishOrders publishes n orders for host and returns their ids and the
// host's consumer.
func publishOrders(t *testing.T, q *queue.Queue, host string, n int) ([]uuid.UUID, jetstream.Consumer) {
	t.Helper()
	ctx := testenv.Context(t)
	var ids []uuid.UUID
	for range n {
		id := uuid.Must(uuid.NewV7())
		if _, err := q.Publish(ctx, host, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	c, err := q.HostConsumer(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	return ids, c
}

func streamMsgs(t *testing.T, q *queue.Queue) uint64 {
	t.Helper()
	st, err := q.JetStream().Stream(testenv.Context(t), queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(testenv.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func equalIDs(a, b []uuid.UUID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPublishDedupAndHostConsumers: a republished order id is one message;
// each host's consumer gets only its host's orders, in publish order; an
// acked order stays in the stream (limits retention: the ack writes
// nothing) until PurgeAcked removes it.
func TestPublishDedupAndHostConsumers(t *testing.T) {
	q, _ := openQueue(t, queue.Options{AckWait: 30 * time.Second})
	ctx := testenv.Context(t)
	byHost := map[string][]uuid.UUID{}
	for i := range 6 {
		host := []string{"h1", "h2", "h-3"}[i%3]
		id := uuid.Must(uuid.NewV7())
		seq, err := q.Publish(ctx, host, id)
		if err != nil {
			t.Fatal(err)
		}
		again, err := q.Publish(ctx, host, id) // the reconciler's republish
		if err != nil || again != seq {
			t.Fatalf("republish: sequence %d (%v), want the original %d", again, err, seq)
		}
		byHost[host] = append(byHost[host], id)
	}
	if n := streamMsgs(t, q); n != 6 {
		t.Fatalf("%d messages in the stream, want 6", n)
	}
	for _, host := range []string{"h1", "h2", "h-3"} {
		c, err := q.HostConsumer(ctx, host)
		if err != nil {
			t.Fatal(err)
		}
		msgs, ids := fetchOnly(t, c, len(byHost[host]))
		if !equalIDs(ids, byHost[host]) {
			t.Fatalf("host %s got %v, want %v", host, ids, byHost[host])
		}
		for _, m := range msgs {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := streamMsgs(t, q); n != 6 {
		t.Fatalf("%d messages left after every order was acked, want 6 until the purge", n)
	}
	if _, err := q.PurgeAcked(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, q); n != 0 {
		t.Fatalf("%d messages left after every order was acked and purged", n)
	}
}

// TestHostConsumerRedelivery: an order held unacknowledged is delivered
// again after the ack wait, and at once, in stream order, to a renewed
// consumer (a successor after a takeover); the host's consumer holds at
// most two orders unacknowledged.
func TestHostConsumerRedelivery(t *testing.T) {
	q, _ := openQueue(t, queue.Options{AckWait: time.Second})
	ctx := testenv.Context(t)
	want, c := publishOrders(t, q, "r1", 3)
	_, ids := fetchIDs(t, c, 2, 30*time.Second)
	if !equalIDs(ids, want[:2]) {
		t.Fatalf("first fetch %v, want the first two orders", ids)
	}
	// The third waits: the consumer holds at most two (its limit, read,
	// not a short fetch of three that must come back with two).
	if info, err := c.Info(ctx); err != nil || info.Config.MaxAckPending != 2 || info.NumAckPending != 2 || info.NumPending != 1 {
		t.Fatalf("consumer after the first fetch: %+v (%v), want two held of at most two, one waiting", info, err)
	}
	// Unacknowledged: after the ack wait, the same two come again.
	_, again := fetchIDs(t, c, 2, 30*time.Second)
	if !equalIDs(again, want[:2]) {
		t.Fatalf("redelivered %v, want %v", again, want[:2])
	}

	// A successor renews the consumer with a long ack wait: what was held
	// comes back at once and in order, not after the ack wait.
	slow, err := queue.New(ctx, q.Conn(), queue.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := slow.RenewHostConsumer(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	// Within half its ack wait: not redelivered by the ack timer.
	msgs, ids := fetchIDs(t, renewed, 2, 30*time.Second)
	if !equalIDs(ids, want[:2]) {
		t.Fatalf("renewed consumer gave %v, want %v before its ack wait", ids, want[:2])
	}
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, ids = fetchOnly(t, renewed, 1)
	if !equalIDs(ids, want[2:]) {
		t.Fatalf("after acking, got %v, want %v", ids, want[2:])
	}
}

// TestRewindHostConsumer: a rewind in place hands what the consumer holds
// unacknowledged back at once, in stream order, numbered from 1 again, and
// keeps the consumer, however often; it creates a missing one.
func TestRewindHostConsumer(t *testing.T) {
	q, _ := openQueue(t, queue.Options{AckWait: time.Minute})
	ctx := testenv.Context(t)
	want, c := publishOrders(t, q, "r2", 3)
	created := c.CachedInfo().Created
	if _, ids := fetchIDs(t, c, 2, 30*time.Second); !equalIDs(ids, want[:2]) {
		t.Fatalf("first fetch %v, want %v", ids, want[:2])
	}
	// held checks that r delivers want at once, numbered from first (after
	// a rewind, 1: the worker refuses a first delivery numbered above 1)
	held := func(r jetstream.Consumer, want []uuid.UUID, first uint64) []jetstream.Msg {
		t.Helper()
		// Within half the ack wait: not redelivered by the ack timer.
		msgs, ids := fetchIDs(t, r, len(want), 30*time.Second)
		if !equalIDs(ids, want) {
			t.Fatalf("rewound consumer gave %v, want %v before the ack wait", ids, want)
		}
		for i, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if meta.Sequence.Consumer != first+uint64(i) {
				t.Fatalf("delivery %d of %v is numbered %d, want %d", i+1, want, meta.Sequence.Consumer, first+uint64(i))
			}
		}
		return msgs
	}

	var msgs []jetstream.Msg
	for range 2 {
		r, err := q.RewindHostConsumer(ctx, "r2")
		if err != nil {
			t.Fatal(err)
		}
		msgs = held(r, want[:2], 1)
		info, err := r.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Created.Equal(created) {
			t.Errorf("consumer created %s, then %s: the rewind replaced it", created, info.Created)
		}
	}
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	held(c, want[2:], 3)

	// Missing (deleted by hand, or lost with a restart): created at the
	// first message still stored; the purge of the acknowledged ones
	// (every few seconds in the API) has come first, so that is the
	// unacked one.
	if _, err := q.PurgeAcked(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.JetStream().DeleteConsumer(ctx, queue.OrdersStream, queue.ConsumerName("r2")); err != nil {
		t.Fatal(err)
	}
	r, err := q.RewindHostConsumer(ctx, "r2")
	if err != nil {
		t.Fatal(err)
	}
	held(r, want[2:], 1)
}

// TestRewindWithoutReset: where a reset cannot reach the consumer (a
// nats-server before 2.14, or an authorization that does not allow it;
// here the latter), the rewind recreates the consumer, as before resets:
// what was held comes back at once all the same.
func TestRewindWithoutReset(t *testing.T) {
	noReset := &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.CONSUMER.RESET.>"}}}
	ns := testenv.NATSServer(t, &server.Options{Users: []*server.User{{Username: "old", Password: "old", Permissions: noReset}}})
	nc, err := queue.Connect(ns.ClientURL(), "queue-test", nats.UserInfo("old", "old"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	q, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want, c := publishOrders(t, q, "r3", 2)
	if _, ids := fetchIDs(t, c, 2, 30*time.Second); !equalIDs(ids, want) {
		t.Fatalf("first fetch %v, want %v", ids, want)
	}
	r, err := q.RewindHostConsumer(ctx, "r3")
	if err != nil {
		t.Fatal(err)
	}
	if r.CachedInfo().Created.Equal(c.CachedInfo().Created) {
		t.Error("the consumer was not recreated")
	}
	// Within half the ack wait: not redelivered by the ack timer.
	if _, ids := fetchIDs(t, r, 2, 30*time.Second); !equalIDs(ids, want) {
		t.Fatalf("recreated consumer gave %v, want %v before the ack wait", ids, want)
	}
}

// TestRewindCreatesALostConsumerAtOnce: a single server has lost the
// host's consumer (back with its store lost). The worker's next tenure
// rewinds it; a reset of a consumer the server does not have is
// never answered, and the rewind waited 2 s for it before it looked the
// consumer up and created it. It looks first now: no reset is sent
// (counted on the API's subject, not timed).
func TestRewindCreatesALostConsumerAtOnce(t *testing.T) {
	q, nc := openQueue(t, queue.Options{AckWait: time.Minute})
	ctx := testenv.Context(t)
	want, _ := publishOrders(t, q, "m3", 2)
	if err := q.JetStream().DeleteConsumer(ctx, queue.OrdersStream, queue.ConsumerName("m3")); err != nil {
		t.Fatal(err)
	}
	resets, err := nc.SubscribeSync("$JS.API.CONSUMER.RESET.>")
	if err != nil {
		t.Fatal(err)
	}
	r, err := q.RewindHostConsumer(ctx, "m3")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, err := resets.Pending(); err != nil || n != 0 {
		t.Fatalf("the rewind of the lost consumer sent %d resets (%v), want none: it waited for an answer that never comes", n, err)
	}
	if _, ids := fetchIDs(t, r, 2, 30*time.Second); !equalIDs(ids, want) {
		t.Fatalf("created consumer gave %v, want %v", ids, want)
	}
	// The count's control: the consumer there, a rewind resets it.
	if _, err := q.RewindHostConsumer(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	if _, err := resets.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("the rewind of the consumer there: no reset seen (%v)", err)
	}
}

// TestLease: one holder at a time; a standby learns who holds the host and
// takes it when released; a holder whose key was taken by a rival loses
// the lease; a holder whose key vanished (expired) takes it again.
func TestLease(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 10 * time.Second})
	ctx := testenv.Context(t)
	a, err := q.AcquireLease(ctx, "l1", "A", func(string) { t.Error("A had to wait for a free host") })
	if err != nil {
		t.Fatal(err)
	}
	standby := make(chan string, 1)
	got := make(chan *queue.Lease, 1)
	go func() {
		b, err := q.AcquireLease(ctx, "l1", "B", func(holder string) { standby <- holder })
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	select {
	case holder := <-standby:
		if holder != "A" {
			t.Fatalf("standby saw holder %q, want A", holder)
		}
	case <-ctx.Done():
		t.Fatal("B never became a standby")
	}
	if retaken, err := a.Renew(ctx); err != nil || retaken {
		t.Fatalf("A's renewal while it holds the host: retaken %v, %v", retaken, err)
	}
	select {
	case <-got:
		t.Fatal("B took the host while A held it")
	default:
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var b *queue.Lease
	select {
	case b = <-got:
	case <-ctx.Done():
		t.Fatal("B did not take the released host")
	}
	if h, err := holder(t, q, "l1"); err != nil || h != "B" {
		t.Fatalf("holder %q (%v), want B", h, err)
	}
	if _, err := a.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("A's renewal after B took the host: %v, want ErrLeaseLost", err)
	}

	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The key vanished (as when it expired in a long pause): B takes it again.
	if err := kv.Delete(ctx, "lease.l1"); err != nil {
		t.Fatal(err)
	}
	if retaken, err := b.Renew(ctx); err != nil || !retaken {
		t.Fatalf("B's renewal of a vanished key: retaken %v, %v; want it taken again", retaken, err)
	}
	if h, _ := holder(t, q, "l1"); h != "B" {
		t.Fatalf("holder %q after B took the vanished key again", h)
	}
	// A rival replaced it: B has lost the host and must not overwrite it.
	e, err := kv.Get(ctx, "lease.l1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "lease.l1", []byte("C"), e.Revision()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("B's renewal after a rival took the host: %v, want ErrLeaseLost", err)
	}
	if h, _ := holder(t, q, "l1"); h != "C" {
		t.Fatalf("holder %q, want the rival C untouched", h)
	}
	if h, err := holder(t, q, "nobody"); err != nil || h != "" {
		t.Fatalf("holder of a host never leased: %q %v", h, err)
	}
}

// TestHeartbeatsAndOffline: a beating host is online with its info until
// it goes offline.
func TestHeartbeatsAndOffline(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	cur := uuid.Must(uuid.NewV7())
	for _, h := range []queue.HostInfo{
		{Host: "o1", Instance: "o1/a", Version: "v1", CurrentOrder: &cur},
		{Host: "o2", Instance: "o2/b", Version: "v2"},
	} {
		h.StartedAt, h.LastSeen = time.Now(), time.Now()
		if err := q.Heartbeat(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	online, err := q.OnlineHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(online) != 2 || online["o1"].Instance != "o1/a" || online["o1"].CurrentOrder == nil ||
		*online["o1"].CurrentOrder != cur || online["o2"].Version != "v2" {
		t.Fatalf("online hosts: %+v", online)
	}
	if err := q.Offline(ctx, "o1"); err != nil {
		t.Fatal(err)
	}
	online, err = q.OnlineHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := online["o1"]; ok || len(online) != 1 {
		t.Fatalf("after o1 went offline: %+v", online)
	}
	// HostOnline reads one host's heartbeat, as OnlineHosts judges it.
	for host, want := range map[string]bool{"o1": false, "o2": true, "never": false} {
		if got, err := q.HostOnline(ctx, host); err != nil || got != want {
			t.Errorf("HostOnline(%s) = %v, %v; want %v", host, got, err, want)
		}
	}
}

// TestEventsAreScopedToHostAndOrder: a subscriber to one order's events
// gets that order's events on its host's subject only: not the same id on
// another host's subject (another worker), not another order's. The
// wrong events are published first on the same connection, so they would
// arrive before the right one.
func TestEventsAreScopedToHostAndOrder(t *testing.T) {
	q, nc := openQueue(t, queue.Options{})
	id, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	sub, events, err := q.SubscribeEvents("e1", id)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []queue.Event{
		{OrderID: id, Host: "e2", Type: "finished", Status: "succeeded"},
		{OrderID: other, Host: "e1", Type: "finished", Status: "succeeded"},
		{OrderID: id, Host: "e1", Type: "started", Status: "running"},
	} {
		if err := q.PublishEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-events:
		if ev.OrderID != id || ev.Host != "e1" || ev.Type != "started" {
			t.Fatalf("got %+v, want e1's started event of %s", ev, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected second event %+v", ev)
	default:
	}
}

// TestControlReachesItsHostOnly: a cancel wake-up reaches the worker of
// its host, with the order id, and no other host's.
func TestControlReachesItsHostOnly(t *testing.T) {
	q, nc := openQueue(t, queue.Options{})
	got := make(chan string, 4)
	for _, h := range []string{"c1", "c2"} {
		sub, err := q.SubscribeControl(h, func(c queue.Control) { got <- h + " " + c.OrderID.String() })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7())
	if err := q.SendControl("c2", queue.Control{OrderID: id}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	select {
	case s := <-got:
		if s != "c2 "+id.String() {
			t.Fatalf("control delivered as %q", s)
		}
	case <-ctx.Done():
		t.Fatal("no control message within 10s")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		t.Fatalf("control also delivered as %q", s)
	default:
	}
}

// holder reads who holds host's lease from the KV bucket ("" for nobody).
func holder(t *testing.T, q *queue.Queue, host string) (string, error) {
	t.Helper()
	kv, err := q.JetStream().KeyValue(t.Context(), queue.HostsBucket)
	if err != nil {
		return "", err
	}
	e, err := kv.Get(t.Context(), "lease."+host)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}

// TestBindTakesTheBucketsLeaseTTL: a bound queue's lease is the hosts
// bucket's TTL, which the API set, not the worker's own nats.lease_ttl:
// the bucket is what expires a lease.
func TestBindTakesTheBucketsLeaseTTL(t *testing.T) {
	_, nc := openQueue(t, queue.Options{LeaseTTL: 2 * time.Second})
	q, err := queue.Bind(testenv.Context(t), nc, queue.Options{LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.LeaseTTL(); got != 2*time.Second {
		t.Errorf("bound lease %s, want the bucket's 2s", got)
	}
}

// TestHeartbeatCountsForItsKeysHostOnly: a worker may write only its own
// host's heartbeat key (NATS permissions), and an entry there that names
// another host makes neither host online.
func TestHeartbeatCountsForItsKeysHostOnly(t *testing.T) {
	q, nc := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	if err := q.Heartbeat(ctx, queue.HostInfo{Host: "k1", Instance: "k1/a", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for key, host := range map[string]string{"info.k2": "k1", "info.k3": "no such host"} {
		if _, err := kv.Put(ctx, key, []byte(`{"host":"`+host+`","instance":"forged"}`)); err != nil {
			t.Fatal(err)
		}
	}
	online, err := q.OnlineHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(online) != 1 || online["k1"].Instance != "k1/a" {
		t.Fatalf("online hosts: %+v, want k1 alone, with its own heartbeat", online)
	}
}

// TestOnlineHostsSkipsStaleEntries: a heartbeat entry the server did not
// expire (here a bucket without a TTL; in life a full disk stops the
// server's writes, removals included) does not keep a host online once it
// is two leases old.
func TestOnlineHostsSkipsStaleEntries(t *testing.T) {
	nc, err := queue.Connect(testenv.NATS(t), "queue-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket}); err != nil {
		t.Fatal(err)
	}
	q, err := queue.Bind(ctx, nc, queue.Options{LeaseTTL: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Heartbeat(ctx, queue.HostInfo{Host: "h1", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if online, err := q.OnlineHosts(ctx); err != nil || len(online) != 1 {
		t.Fatalf("online right after a beat: %v %v", online, err)
	}
	time.Sleep(1100 * time.Millisecond)
	if online, err := q.OnlineHosts(ctx); err != nil || len(online) != 0 {
		t.Fatalf("online two leases after the last beat: %v %v", online, err)
	}
}

// TestOnlineHostsOnTheServersClock: whether a heartbeat is recent, and
// when it was seen, is judged on the NATS server's clock. Here this host's
// clock is ten minutes ahead and the worker's ten minutes behind: judged
// on this host's clock, every beat was two leases old and every host was
// offline, and the host's last_seen said the worker's ten minutes ago.
func TestOnlineHostsOnTheServersClock(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 2 * time.Second,
		Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
	ctx := testenv.Context(t)
	behind := time.Now().Add(-10 * time.Minute)
	if err := q.Heartbeat(ctx, queue.HostInfo{Host: "skewed", Instance: "skewed/a", StartedAt: behind, LastSeen: behind}); err != nil {
		t.Fatal(err)
	}
	online, err := q.OnlineHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := online["skewed"]
	if !ok {
		t.Fatalf("a host that just beat is not online: %+v", online)
	}
	if age := time.Since(h.LastSeen); age < -time.Second || age > 5*time.Second {
		t.Errorf("last seen %s (%s ago), want the server's time of the beat", h.LastSeen, age)
	}
}
