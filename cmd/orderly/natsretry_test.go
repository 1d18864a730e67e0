package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// natsSubmitter publishes submissions for one host and reads the answers
// on its own reply inbox.
type natsSubmitter struct {
	t       *testing.T
	nc      *nats.Conn
	host    string
	reply   string
	answers *nats.Subscription
}

func newNATSSubmitter(t *testing.T, natsURL, host string) *natsSubmitter {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	reply := "_INBOX.retry." + host
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	return &natsSubmitter{t: t, nc: nc, host: host, reply: reply, answers: sub}
}

// send publishes body with token and msgID (none if empty) and returns
// the answer that comes back (sendNATS).
func (n *natsSubmitter) send(token, msgID string, body any) api.IntakeAnswer {
	n.t.Helper()
	a, _ := sendNATS(n.t, n, token, msgID, body)
	return a
}

// TestNATSRetryIsAnswered: a publisher that sends the same Nats-Msg-Id
// again gets the same order as its answer (JetStream used to drop the
// duplicate unanswered), and a retry after a refusal is taken up afresh
// (it used to be dropped, so the refused submission could never succeed).
func TestNATSRetryIsAnswered(t *testing.T) {
	s := newStack(t, "rt")
	n := newNATSSubmitter(t, s.natsURL, "rt")
	body := map[string]any{"command": "true"}

	first := n.send(s.token, "retry-same", body)
	if first.Order == nil {
		t.Fatalf("first answer: %+v", first.Error)
	}
	// Past the stream's duplicate window, a publisher's retry on timeout.
	time.Sleep(2 * queue.SubmitDedupWindow)
	again := n.send(s.token, "retry-same", body)
	if again.Order == nil || again.Order.ID != first.Order.ID {
		t.Fatalf("retry answered %+v / %+v, want order %s", again.Order, again.Error, first.Order.ID)
	}

	refused := n.send("ord_expired-token", "retry-after-refusal", body)
	if refused.Error == nil || refused.Error.Code != "unauthenticated" {
		t.Fatalf("refusal: %+v", refused)
	}
	time.Sleep(2 * queue.SubmitDedupWindow)
	accepted := n.send(s.token, "retry-after-refusal", body)
	if accepted.Order == nil {
		t.Fatalf("retry after refusal: %+v", accepted.Error)
	}
	s.waitFor(accepted.Order.ID, 20*time.Second, terminal)

	var orders int
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders`).Scan(&orders)
	if orders != 2 {
		t.Fatalf("%d orders, want 2", orders)
	}
}

// TestNATSRateLimited: NATS submissions count against
// limits.rate_per_principal like REST requests, from the same allowance,
// and a refusal is answered and audited.
func TestNATSRateLimited(t *testing.T) {
	s := newStackFrom(t, "", map[string]any{"limits.rate_per_principal": "3"}, "rl")
	n := newNATSSubmitter(t, s.natsURL, "rl")
	body := map[string]any{"command": "true"}
	for _, id := range []string{"rl-1", "rl-2"} {
		if a := n.send(s.token, id, body); a.Order == nil {
			t.Fatalf("%s: %+v", id, a.Error)
		}
	}
	// The third request of the minute is a REST one; the fourth is refused.
	s.submit(map[string]any{"host": "rl", "command": "true"}, "", http.StatusAccepted)
	a := n.send(s.token, "rl-3", body)
	if a.Error == nil || a.Error.Code != "rate_limited" || a.Error.Details["retry_after_seconds"] == nil {
		t.Fatalf("over the limit: %+v %+v", a.Order, a.Error)
	}
	var audited, orders int
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM rejections WHERE source = 'nats' AND code = 'rate_limited'`).Scan(&audited)
	_ = s.b.pool.QueryRow(ctxT(t), `SELECT count(*) FROM orders`).Scan(&orders)
	if audited != 1 || orders != 3 {
		t.Fatalf("%d audited refusals (want 1), %d orders (want 3)", audited, orders)
	}
}

// TestNATSIntakeDuringPostgresBlip: while the API's PostgreSQL connections
// are cut again and again for seconds, NATS submissions are retried in
// place, not refused or skipped: every one is answered with its order,
// none is recorded twice, and the host's stream holds them in publish
// order.
func TestNATSIntakeDuringPostgresBlip(t *testing.T) {
	dsn := testenv.Postgres(t)
	proxyDSN, cut := startPGProxy(t, dsn)
	s := newStackFrom(t, "", map[string]any{"database_url": proxyDSN}) // no worker: the stream keeps the orders
	ctx := ctxT(t)
	direct, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	n := newNATSSubmitter(t, s.natsURL, "pgblip")
	js, err := jetstream.New(n.nc)
	if err != nil {
		t.Fatal(err)
	}

	// The blip lasts a few seconds, or until every submission is answered:
	// a fresh connection outlives a cut only by luck, so while it goes on
	// nothing guarantees progress. What must hold is that nothing is lost,
	// refused, doubled or reordered, and that all is answered once it ends.
	stop := make(chan struct{})
	blipped := blipPostgres(ctx, direct, cut, stop, 3*time.Second)
	const total = 150
	for i := range total {
		m := nats.NewMsg(queue.SubmitSubject + "pgblip")
		m.Header.Set("Authorization", "Bearer "+s.token)
		m.Header.Set("Orderly-Reply", n.reply)
		m.Header.Set("Nats-Msg-Id", fmt.Sprintf("blip-%03d", i))
		m.Data = []byte(`{"command":"true"}`)
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // spread over the blip
	}
	<-js.PublishAsyncComplete()
	ids := map[uuid.UUID]bool{}
	for len(ids) < total {
		msg, err := n.answers.NextMsg(60 * time.Second)
		if err != nil {
			t.Fatalf("%d of %d submissions answered: %v", len(ids), total, err)
		}
		var a api.IntakeAnswer
		if err := json.Unmarshal(msg.Data, &a); err != nil || a.Order == nil {
			t.Fatalf("answer is not an order: %s", msg.Data)
		}
		ids[a.Order.ID] = true
	}
	close(stop)
	f := <-blipped
	t.Logf("%d connections cut or terminated", f[0]+f[1])
	if f[0]+f[1] == 0 {
		t.Fatal("no connection was cut; the fault was not injected")
	}

	keys := map[uuid.UUID]string{}
	rows, err := direct.Query(ctx, `SELECT id, idempotency_key FROM orders WHERE host = 'pgblip'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		var k string
		if err := rows.Scan(&id, &k); err != nil {
			t.Fatal(err)
		}
		keys[id] = k
	}
	if rows.Err() != nil || len(keys) != total {
		t.Fatalf("%d orders recorded for %d submissions (%v)", len(keys), total, rows.Err())
	}
	// The host's stream, in order: each order once, in publish order.
	// (The host's own consumer, as its worker would take it; a work-queue
	// stream allows no other.)
	hc, err := s.b.queue.HostConsumer(ctx, "pgblip")
	if err != nil {
		t.Fatal(err)
	}
	it, err := hc.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	var last string
	seen := map[string]bool{}
	for len(seen) < total {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("%d of %d orders in the host's stream: %v", len(seen), total, err)
		}
		_ = m.Ack()
		k := keys[uuid.MustParse(string(m.Data()))]
		if seen[k] {
			continue // a republish is harmless: the worker runs an order once
		}
		seen[k] = true
		if k < last {
			t.Errorf("%s is in the host's stream after %s", k, last)
		}
		last = k
	}
}
