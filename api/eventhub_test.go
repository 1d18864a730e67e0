package api

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/order"
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
	// c's end proves the subscription handled everything before it (b's
	// second end would not: a waiter is handed its order's end once).
	c := uuid.New()
	chC, stopC, err := h.wait(nc, "web2", c)
	if err != nil {
		t.Fatal(err)
	}
	publish("web2", queue.Event{OrderID: c, Type: "finished", Status: "succeeded", Host: "web2"})
	next(chC)
	stopC()
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
// the status are each per event); read without encoding/json
// (eventEnd), none.
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
	// The finished event of an order that printed nothing says it is
	// alone in the live stream (queue.Event.Alone): a value that is no
	// string, read without encoding/json all the same.
	b, err := json.Marshal(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "h-1", Alone: true})
	if err != nil {
		t.Fatal(err)
	}
	alone := &nats.Msg{Subject: subject, Data: b}
	for _, fin := range []*nats.Msg{finished, alone} {
		n := testing.AllocsPerRun(200, func() {
			// A fresh wait each time: a waiter is handed its order's end
			// once.
			h.waiters[subject] = waiter{id: id, ch: ch}
			h.deliver(started)
			h.deliver(fin)
			if ev := <-ch; ev.OrderID != id || ev.Status != "succeeded" || len(ch) != 0 {
				t.Fatalf("handed %+v (and %d more), want only the finished event", ev, len(ch))
			}
		})
		if n > 0 {
			t.Fatalf("%.0f allocations to hand over an order's two events (%s), want none", n, fin.Data)
		}
	}
}

// TestEventEndAsEncodingJSON: eventEnd reads every event as encoding/json
// reads it into the waiters' two fields (the id and the status, or an
// error), whether it takes its own path (PublishEvent's flat object) or
// encoding/json's (anything else).
func TestEventEndAsEncodingJSON(t *testing.T) {
	id := uuid.New()
	published, err := json.Marshal(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "h-1"})
	if err != nil {
		t.Fatal(err)
	}
	ids := id.String()
	events := []string{
		string(published),
		`{"order_id":"` + ids + `","type":"started","status":"running","host":"h-1"}`,
		` { "order_id" : "` + ids + `" ,` + "\n\t\r" + `"status":"failed" } ` + "\n",
		`{"status":"killed","order_id":"` + ids + `"}`,
		`{"order_id":"` + ids + `"}`,
		`{"status":"timed_out"}`,
		`{}`,
		`{"order_id":"` + ids + `","status":"succeeded","status":"running"}`, // the last counts
		`{"order_id":"` + ids + `","status":"no-such-status"}`,
		`{"order_id":"` + ids + `","status":""}`,
		`{"order_id":"not-a-uuid","status":"succeeded"}`,
		`{"order_id":"urn:uuid:` + ids + `","status":"succeeded"}`,
		`{"order_id":"{` + ids + `}","status":"succeeded"}`,
		`{"order_id":"` + strings.ReplaceAll(ids, "-", "") + `","status":"succeeded"}`,
		`{"order_id":"` + strings.ToUpper(ids) + `","status":"succeeded"}`,
		`{"order_id":"","status":"succeeded"}`,
		`{"order_id":"not-a-uuid","order_id":"` + ids + `","status":"succeeded"}`, // an error, though the last is good
		`{"order_id":"` + uuid.NewString() + `","order_id":"` + ids + `","status":"succeeded"}`,
		// encoding/json's path: escapes, other keys, other values.
		`{"order_id":"` + ids + `","status":"succ\u0065eded"}`,
		`{"order_id":"` + ids + `","Status":"succeeded"}`,
		`{"ORDER_ID":"` + ids + `","status":"failed"}`,
		`{"order_id":"` + ids + `","status":"succeeded","extra":"x"}`,
		`{"order_id":"` + ids + `","status":"succeeded","extra":1}`,
		`{"order_id":"` + ids + `","type":"finished","status":"succeeded","host":"h-1","alone":true}`,
		`{"order_id":"` + ids + `","status":"failed","alone":false}`,
		`{"alone" : true , "order_id":"` + ids + `","status":"killed"}`,
		`{"order_id":"` + ids + `","status":"succeeded","alone":"true"}`,
		`{"order_id":"` + ids + `","status":"succeeded","alone":tru}`,
		`{"order_id":"` + ids + `","status":"succeeded","alone":truex}`,
		`{"order_id":"` + ids + `","status":"succeeded","alone":1}`,
		`{"order_id":"` + ids + `","status":"succeeded","alone":true`,
		`{"order_id":"` + ids + `","status":null}`,
		`{"order_id":null,"status":"succeeded"}`,
		`{"order_id":"` + ids + `","status":"succeeded","host":{"a":1}}`,
		`{"order_id":"` + ids + `","status":"succeeded"`,
		`{"order_id":"` + ids + `","status":"succeeded"}x`,
		`{"order_id":"` + ids + `","status":"succeeded"}{}`,
		`{"order_id":"` + ids + `","status":"succeeded",}`,
		`{"order_id":"` + ids + `" "status":"succeeded"}`,
		`{"order_id":"` + ids + `","status":"caf\u00e9"}`,
		"{\"order_id\":\"" + ids + "\",\"status\":\"caf\xc3\xa9\"}",
		"{\"order_id\":\"" + ids + "\",\"status\":\"\xff\"}",
		"{\"order_id\":\"" + ids + "\",\"status\":\"a\tb\"}",
		`[]`, `null`, ``, `"x"`, `{`, `}`,
	}
	for _, e := range events {
		var ev struct {
			OrderID uuid.UUID `json:"order_id"`
			Status  string    `json:"status"`
		}
		wantErr := json.Unmarshal([]byte(e), &ev)
		gotID, gotStatus, gotErr := eventEnd([]byte(e))
		if (gotErr != nil) != (wantErr != nil) {
			t.Errorf("%q: error %v, encoding/json's %v", e, gotErr, wantErr)
			continue
		}
		if wantErr != nil {
			continue // deliver drops the event
		}
		if gotID != ev.OrderID || gotStatus.Terminal() != order.Status(ev.Status).Terminal() ||
			gotStatus.Terminal() && string(gotStatus) != ev.Status {
			t.Errorf("%q: %v %q, encoding/json's %v %q", e, gotID, gotStatus, ev.OrderID, ev.Status)
		}
	}
}

// TestEventHubHearsNoConsumersDelivery: on a bus with the accounts, the
// seed of host web-2's worker writes a finished event of an order of
// web-1 on its own lease key and aims a push consumer of that key at the
// order's events subject, which its permissions keep it from publishing
// to: nats-server delivers it there, in orderly's account, as a raw
// subscriber of the API's connection sees. The order's waiter is handed
// first the genuine event published after it: a consumer's delivery
// carries the subject its stream stored it on (web-2's lease key), and
// the hub finds the waiter by the message's subject, not by the
// subscription's. A guard (it passed as it is): a hub keyed otherwise
// would take the forgery, as queue.SubscribeControl did (queue.Delivered).
func TestEventHubHearsNoConsumersDelivery(t *testing.T) {
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "serve0", []string{"web-1", "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	bus, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Shutdown)
	connect := func(seed, inbox string) *nats.Conn {
		t.Helper()
		nk, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(bus.ClientURL(), nk, nats.CustomInboxPrefix(inbox))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	nc := connect(creds.API, queue.APIInbox)
	if _, err := queue.New(ctx, nc, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	var h eventHub
	id := uuid.New() // an order of web-1's
	subject := queue.EventSubjectOf("web-1", id)
	ch, stop, err := h.wait(nc, "web-1", id)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	raw, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	seed := connect(creds.Workers["web-2"], queue.WorkerInbox("web-2"))
	js, err := jetstream.New(seed)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "web-1"})
	lease := "$KV." + queue.HostsBucket + ".lease.web-2"
	if _, err := js.Publish(ctx, lease, forged); err != nil {
		t.Fatalf("web-2's own lease key: %v", err)
	}
	if _, err := js.CreateConsumer(ctx, "KV_"+queue.HostsBucket, jetstream.ConsumerConfig{
		DeliverSubject: subject, FilterSubject: lease, AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatalf("web-2's push consumer of its lease key aimed at %s: %v", subject, err)
	}
	m, err := raw.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatalf("the push consumer's delivery on %s: %v", subject, err)
	}
	if string(m.Data) != string(forged) || !strings.HasPrefix(m.Reply, "$JS.ACK.") {
		t.Fatalf("on %s: %q with reply %q, want web-2's forgery delivered by its consumer", subject, m.Data, m.Reply)
	}

	genuine, _ := json.Marshal(queue.Event{OrderID: id, Type: "finished", Status: "failed", Host: "web-1"})
	if err := nc.Publish(subject, genuine); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.Status != "failed" {
			t.Fatalf("the waiter of order %s of web-1 was handed %q (web-2's forgery), before its finished event", id, ev.Status)
		}
	case <-ctx.Done():
		t.Fatal("the waiter never got the order's finished event")
	}
}

// TestEventHubIsNotSentTheEndsToFree: the end of an order with live
// output to free, which queue.PublishEvent sends after its finished
// event on queue.FreeSubjectOf for the live output's freeing, does not
// reach the waiters' shared subscription: it subscribes to the four-token
// event subjects only, and was sent every such end otherwise, one more
// delivery per order that printed, for no waiter.
func TestEventHubIsNotSentTheEndsToFree(t *testing.T) {
	url := testenv.NATS(t)
	worker := testenv.Queue(t, url, "worker", queue.Options{})
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var h eventHub
	loud, quiet := uuid.New(), uuid.New()
	ch, stop, err := h.waitAll(nc, []string{"web1", "web1"}, []uuid.UUID{loud, quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// The quiet order's end comes after the loud order's two messages:
	// once it is handed over, the subscription has handled them.
	for _, ev := range []queue.Event{
		{OrderID: loud, Type: "finished", Status: "succeeded", Host: "web1"},
		{OrderID: quiet, Type: "finished", Status: "succeeded", Host: "web1", Alone: true},
	} {
		if err := worker.PublishEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []uuid.UUID{loud, quiet} {
		select {
		case ev := <-ch:
			if ev.OrderID != want {
				t.Fatalf("the waiters got %v, want %v", ev.OrderID, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no end of %v within 10s", want)
		}
	}
	h.subMu.Lock()
	n, _ := h.sub.Delivered()
	h.subMu.Unlock()
	if n != 2 {
		t.Fatalf("the shared subscription was sent %d messages for two finished events, want 2", n)
	}
}
