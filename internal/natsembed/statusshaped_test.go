package natsembed

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// publishShaped publishes, as c, a message with an empty body and the
// headers h (name, value pairs) on subject: the shape nats.go's JetStream
// client takes for a status message of the server's.
func (c *client) publishShaped(t *testing.T, subject string, h ...string) {
	t.Helper()
	m := nats.NewMsg(subject)
	for i := 0; i+1 < len(h); i += 2 {
		m.Header.Set(h[i], h[i+1])
	}
	if err := c.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	c.clean(t)
}

// apiQueue connects to b with seed (the API's credential or serve's) as
// the API does, and makes the queue's streams and buckets.
func (b *bus) apiQueue(t *testing.T, ctx context.Context, seed string, opts queue.Options) (*client, *queue.Queue) {
	t.Helper()
	c := b.connect(t, seed, queue.APIInbox)
	q, err := queue.New(ctx, c.nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, q
}

// workerQueue connects to b as the worker of host, and binds to the
// queue's streams and buckets as the worker does.
func (b *bus) workerQueue(t *testing.T, ctx context.Context, host string, opts queue.Options) (*client, *queue.Queue) {
	t.Helper()
	c := b.connect(t, b.creds.Workers[host], queue.WorkerInbox(host))
	q, err := queue.Bind(ctx, c.nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, q
}

// wantOneOrder fails unless the orders stream, read through c, holds
// the one order the test published, after what.
func wantOneOrder(t *testing.T, ctx context.Context, c *client, after string) {
	t.Helper()
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("the orders stream after %s: %+v %v, want its one order", after, info.State, err)
	}
}

// TestHostsListedPastAStatusShapedReport: the worker of h1 writes, on the
// keys NATS lets it write, a heartbeat and a standby report shaped as the
// server's idle heartbeat, naming the orders stream's purge as the subject
// to answer a stalled consumer on. The API still lists h2, and the orders
// stream keeps its order: nats.go's KV watch never handed such an entry
// over (the listing of every host waited out its deadline) and published
// the empty answer on the API's connection, which purged the stream.
func TestHostsListedPastAStatusShapedReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api, qAPI := b.apiQueue(t, ctx, b.creds.API, queue.Options{LeaseTTL: 5 * time.Second})
	if _, err := qAPI.Publish(ctx, "h2", uuid.New()); err != nil {
		t.Fatal(err)
	}
	shaped := []string{"Status", "100", "Description", "Idle Heartbeat",
		"Nats-Consumer-Stalled", "$JS.API.STREAM.PURGE." + queue.OrdersStream}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	// One before h2's heartbeat (read ahead of it), one after (read last).
	w1.publishShaped(t, "$KV."+queue.HostsBucket+".info.h1", shaped...)
	_, q2 := b.workerQueue(t, ctx, "h2", queue.Options{LeaseTTL: 5 * time.Second})
	lease, err := q2.AcquireLease(ctx, "h2", "w2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Beat(ctx, queue.HostInfo{Host: "h2", Instance: "w2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := q2.StandbyBeat(ctx, queue.HostInfo{Host: "h2", Instance: "w2-standby"}); err != nil {
		t.Fatal(err)
	}
	w1.publishShaped(t, "$KV."+queue.HostsBucket+".standby.h1", shaped...)

	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	online, standbys, err := qAPI.Workers(lctx)
	lcancel()
	if err != nil {
		t.Fatalf("the API's listing of the workers: %v", err)
	}
	if len(online) != 1 || online["h2"].Instance != "w2" || len(standbys) != 1 || standbys["h2"].Instance != "w2-standby" {
		t.Fatalf("the API's listing: online %+v, standbys %+v; want h2's worker and standby only", online, standbys)
	}
	api.clean(t) // anything the listing published has reached the server
	wantOneOrder(t, ctx, api, "the listing")
}

// TestLiveFollowedPastStatusShapedMessages: the worker of h1 stores, on
// its order's output and event subjects, messages shaped as each status
// message of the server's, then a chunk of output. The API's follower of
// the order takes every one of them, in order, and makes one consumer:
// nats.go's ordered consumer never handed such a message over and made
// its consumer again at it, some thousand times a second, for as long as
// the follower stayed, the chunk never reached.
func TestLiveFollowedPastStatusShapedMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api, qAPI := b.apiQueue(t, ctx, b.creds.API, queue.Options{})
	w1, q1 := b.workerQueue(t, ctx, "h1", queue.Options{})
	id := uuid.New()
	shapes := [][]string{
		{"Status", "409", "Description", "Consumer Deleted"},
		{"Status", "100", "Description", "Idle Heartbeat", "Nats-Last-Consumer", "999",
			"Nats-Consumer-Stalled", "$JS.API.STREAM.PURGE." + queue.OrdersStream},
		{"Status", "100", "Description", "FlowControl Request"},
		{"Status", "404", "Description", "No Messages"},
		{"Status", "408", "Description", "Request Timeout", "Nats-Pending-Messages", "1000"},
		{"Status", "400", "Description", "Bad Request"},
		{"Status", "409", "Description", "Leadership Change"},
	}
	for _, h := range shapes {
		w1.publishShaped(t, queue.OutputSubjectOf("h1", id), h...)
		w1.publishShaped(t, queue.EventSubjectOf("h1", id), h...)
	}
	if err := q1.PublishOutput("h1", id, "stdout", 0, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	w1.clean(t)

	js, err := jetstream.New(api.nc)
	if err != nil {
		t.Fatal(err)
	}
	before, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live, err := qAPI.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Stop()
	for i := range 2 * len(shapes) {
		m, err := live.Next(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := shapes[i/2][1]; m.Header.Get("Status") != want || len(m.Data) != 0 {
			t.Fatalf("message %d: %q %v, want the one shaped as status %s", i, m.Data, m.Header, want)
		}
	}
	m, err := live.Next(ctx)
	if err != nil || string(m.Data) != "hello" {
		t.Fatalf("the chunk after them: %v %v", m, err)
	}
	after, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The live stream's info (its creation time, which tells the feed a
	// stream made again: hC16), the follower's consumer, and the account
	// info read after it.
	if calls := after.API.Total - before.API.Total; calls > 3 {
		t.Fatalf("%d JetStream API requests while following, want the stream's info, the consumer's creation and the account info", calls)
	}
}

// TestServeStandbyPastAStatusShapedLease: serve waits as the standby of
// its own host while another worker of that host, holding the host's
// credential, holds the lease and writes it shaped as the server's idle
// heartbeat, naming the orders stream's purge as the subject to answer a
// stalled consumer on. serve takes the lease once it is released, and the
// orders stream keeps every host's order: nats.go's KV watch published the
// empty answer on serve's connection, which carries the API's
// permissions, and purged it.
func TestServeStandbyPastAStatusShapedLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	serve, qs := b.apiQueue(t, ctx, b.creds.Serve, queue.Options{LeaseTTL: time.Minute})
	if _, err := qs.Publish(ctx, "h1", uuid.New()); err != nil {
		t.Fatal(err)
	}
	w0, q0 := b.workerQueue(t, ctx, "h0", queue.Options{LeaseTTL: time.Minute})
	if _, err := q0.AcquireLease(ctx, "h0", "other", nil); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(serve.nc)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := js.Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan error, 1)
	go func() {
		_, err := qs.AcquireLease(ctx, "h0", "serve", nil)
		taken <- err
	}()
	// serve watches the lease key: the bucket's one consumer.
	for n := 0; n == 0; {
		for range hosts.ConsumerNames(ctx).Name() {
			n++
		}
		select {
		case <-ctx.Done():
			t.Fatal("serve never watched the lease")
		case <-time.After(10 * time.Millisecond):
		}
	}
	w0.publishShaped(t, "$KV."+queue.HostsBucket+".lease.h0", "Status", "100", "Description", "Idle Heartbeat",
		"Nats-Consumer-Stalled", "$JS.API.STREAM.PURGE."+queue.OrdersStream)
	// Released as a worker releases (queue's Lease.Release): a delete
	// naming its holder. One without is a delete by hand, which a standby
	// leaves to the holder for a lease.
	w0.publishShaped(t, "$KV."+queue.HostsBucket+".lease.h0", "KV-Operation", "DEL", queue.ReleasedHeader, "other")
	if err := <-taken; err != nil {
		t.Fatalf("serve taking its host's lease: %v", err)
	}
	serve.clean(t)
	wantOneOrder(t, ctx, serve, "serve's wait")
}

// TestLiveFollowedPastALostConsumer: the follower's consumer is deleted
// under it (as a NATS restart loses it); once three heartbeats have not
// come, the follower makes it again after the last message it handed
// over, and takes the next chunk, not the first again.
func TestLiveFollowedPastALostConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api, qAPI := b.apiQueue(t, ctx, b.creds.API, queue.Options{})
	_, q1 := b.workerQueue(t, ctx, "h1", queue.Options{})
	id := uuid.New()
	if err := q1.PublishOutput("h1", id, "stdout", 0, []byte("one")); err != nil {
		t.Fatal(err)
	}
	live, err := qAPI.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Stop()
	if m, err := live.Next(ctx); err != nil || string(m.Data) != "one" {
		t.Fatalf("the first chunk: %v %v", m, err)
	}
	js, err := jetstream.New(api.nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	for name := range s.ConsumerNames(ctx).Name() {
		if err := s.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := q1.PublishOutput("h1", id, "stdout", 3, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if m, err := live.Next(ctx); err != nil || string(m.Data) != "two" {
		t.Fatalf("the chunk after the consumer was lost: %v %v", m, err)
	}
}
