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
	api := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qAPI.Publish(ctx, "h2", uuid.New()); err != nil {
		t.Fatal(err)
	}
	shaped := []string{"Status", "100", "Description", "Idle Heartbeat",
		"Nats-Consumer-Stalled", "$JS.API.STREAM.PURGE." + queue.OrdersStream}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	// One before h2's heartbeat (read ahead of it), one after (read last).
	w1.publishShaped(t, "$KV."+queue.HostsBucket+".info.h1", shaped...)
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	q2, err := queue.Bind(ctx, w2.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
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
	js, err := jetstream.New(api.nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("the orders stream after the listing: %+v %v, want its one order", info.State, err)
	}
}
