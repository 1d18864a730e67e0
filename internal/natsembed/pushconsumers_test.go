package natsembed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestAnotherHostsPushConsumersAreNotHeard: host h2's seed makes push
// consumers through its account's imports, as its lease's watch is made,
// of what it wrote itself (its lease key, the live output of an order of
// its own) and of its own orders (its durable consumer, deleted and made
// again as a push consumer), each with a deliver subject of its choosing:
// h1's control subject, the events subject of an order of h1, a
// submitter's inbox. nats-server makes every one of them (the push or
// pull choice is the request body's, which no permission reads; only the
// live output's aimed at the events subject, which the live stream
// stores, is refused as a cycle), in orderly's account, where they
// deliver: raw subscribers in h1's worker account, in orderly's and in
// the submitters' receive each delivery. orderly's own receivers of
// those subjects hear none of them (queue.Delivered): h1's control
// wake-ups and the order's events hand over first the genuine message
// published after the deliveries. Without Delivered, h1's worker was
// woken up about the forged order and the API read it "succeeded".
func TestAnotherHostsPushConsumersAreNotHeard(t *testing.T) {
	b := startBus(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	apiClient := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, apiClient.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	q1, err := queue.Bind(ctx, w1.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	submitter := b.connect(t, b.creds.Submitter, queue.SubmitterInbox)

	// orderly's receivers: h1's worker's control, the API's wait on an
	// order of h1.
	id := uuid.New() // an order of h1's
	controls := make(chan queue.Control, 16)
	ctl, err := q1.SubscribeControl("h1", func(c queue.Control) { controls <- c })
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Unsubscribe()
	evs, events, err := qAPI.SubscribeEvents("h1", id)
	if err != nil {
		t.Fatal(err)
	}
	defer evs.Unsubscribe()

	// Raw subscribers of the same subjects, each in its account: what the
	// server delivers there.
	type target struct {
		subject, account string
		c                *client
		sub              *nats.Subscription
	}
	targets := []*target{
		{subject: queue.ControlSubject + "h1", account: WorkerAccount("h1"), c: w1},
		{subject: queue.EventSubjectOf("h1", id), account: OrderlyAccount, c: apiClient},
		{subject: queue.SubmitterInbox + ".forged", account: SubmitterAccount, c: submitter},
	}
	for _, tg := range targets {
		if tg.sub, err = tg.c.nc.SubscribeSync(tg.subject); err != nil {
			t.Fatal(err)
		}
		if err := tg.c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	// h2's seed writes, on its own subjects, a body every receiver above
	// would take: an order id of h1's, a finished event of it.
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	js2, err := jetstream.New(w2.nc)
	if err != nil {
		t.Fatal(err)
	}
	q2, err := queue.Bind(ctx, w2.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	forged := fmt.Sprintf(`{"order_id":%q,"type":"finished","status":"succeeded","host":"h1"}`, id)
	lease2 := "$KV." + queue.HostsBucket + ".lease.h2"
	if _, err := js2.Publish(ctx, lease2, []byte(forged)); err != nil {
		t.Fatalf("h2's own lease key: %v", err)
	}
	own := uuid.New() // an order of h2's
	if err := q2.PublishOutput("h2", own, "stdout", 0, []byte(forged)); err != nil {
		t.Fatal(err)
	}
	if err := w2.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sources := []struct{ name, stream, filter string }{
		{"its lease key", "KV_" + queue.HostsBucket, lease2},
		{"its live output", queue.LiveStream, queue.OutputSubjectOf("h2", own)},
	}
	made := make([]int, len(targets)) // the push consumers aimed at each
	for _, src := range sources {
		for i, tg := range targets {
			if _, err := js2.CreateConsumer(ctx, src.stream, jetstream.ConsumerConfig{
				DeliverSubject: tg.subject, FilterSubject: src.filter,
				AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute,
			}); err != nil {
				// The live stream stores the events subjects: aimed there,
				// the server refuses it (10081: the deliver subject forms a
				// cycle). The lease key's reaches them.
				if apiErr, ok := errors.AsType[*jetstream.APIError](err); ok && apiErr.ErrorCode == 10081 && src.stream == queue.LiveStream {
					continue
				}
				t.Fatalf("h2's push consumer of %s aimed at %s: %v", src.name, tg.subject, err)
			}
			made[i]++
		}
	}
	// Its orders' durable consumer, made again as a push consumer aimed
	// at h1's control subject: it delivers h2's orders, as the API wrote
	// them.
	if _, err := q2.HostConsumer(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	if _, err := qAPI.Publish(ctx, "h2", uuid.New()); err != nil {
		t.Fatal(err)
	}
	if err := js2.DeleteConsumer(ctx, queue.OrdersStream, queue.ConsumerName("h2")); err != nil {
		t.Fatalf("h2 deleting its orders' consumer: %v", err)
	}
	if _, err := js2.CreateConsumer(ctx, queue.OrdersStream, jetstream.ConsumerConfig{
		Durable: queue.ConsumerName("h2"), FilterSubject: queue.OrdersSubject + "h2",
		DeliverSubject: targets[0].subject, AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatalf("h2's orders' consumer made a push consumer aimed at %s: %v", targets[0].subject, err)
	}
	w2.clean(t)

	// Each target receives each source's delivery, with the consumer's
	// ack subject as its reply: in h1's account, in orderly's, in the
	// submitters'.
	for i, tg := range targets {
		want := made[i]
		if i == 0 {
			want++ // and an order of h2's
		}
		got := 0
		for got < want {
			m, err := tg.sub.NextMsgWithContext(ctx)
			if err != nil {
				t.Fatalf("%s (account %s): %d of %d deliveries of h2's push consumers: %v", tg.subject, tg.account, got, want, err)
			}
			if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
				t.Fatalf("%s (account %s): a delivery of h2's push consumer with reply %q", tg.subject, tg.account, m.Reply)
			}
			got++
		}
		t.Logf("%s (account %s): %d deliveries of h2's push consumers", tg.subject, tg.account, got)
	}

	// The genuine messages, published after every delivery reached the
	// same connections: each receiver's first message must be its own.
	wake := uuid.New()
	if err := qAPI.SendControl("h1", queue.Control{OrderID: wake}); err != nil {
		t.Fatal(err)
	}
	if err := qAPI.PublishEvent(queue.Event{OrderID: id, Type: "started", Status: "running", Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-controls:
		if c.OrderID != wake {
			t.Errorf("h1's worker was woken up about order %s (h2's forgery), before the API's wake-up about %s", c.OrderID, wake)
		}
	case <-ctx.Done():
		t.Fatal("h1's worker never received the API's wake-up")
	}
	select {
	case ev := <-events:
		if ev.Status != "running" {
			t.Errorf("the API read order %s of h1 %s (h2's forgery), before its started event", id, ev.Status)
		}
	case <-ctx.Done():
		t.Fatal("the API never received the order's started event")
	}
	w1.clean(t)
	apiClient.clean(t)
	submitter.clean(t)
}
