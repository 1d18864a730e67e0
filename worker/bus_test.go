package worker_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerRunsOnlyWhatPostgreSQLHoldsOnce publishes on a host's order
// subject what someone with publish rights there could (a configuration
// without NATS credentials, or the API's stolen seed), each with its own
// Nats-Msg-Id so that JetStream's deduplication stops none of them: the
// id of another host's queued order, in two spellings; a replay of an
// order that already ran, in another spelling; ids of no order; bodies
// that are not ids at all, a large one among them; a replay of an order
// while it runs, which comes as the claim pipelined with its own result.
// Real orders sit
// between them, so that both the first claim and the claim pipelined
// with a result see them. The worker runs each real order once, no
// other, touches nothing of the other host's, and the host does not
// stall.
func TestWorkerRunsOnlyWhatPostgreSQLHoldsOnce(t *testing.T) {
	dsn := testenv.Postgres(t)
	store, pool := testenv.Store(t, dsn)
	url := testenv.NATS(t)
	e := &env{t: t, store: store, q: testenv.Queue(t, url, "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	js := testenv.JetStream(t, url, "forger")
	ctx := t.Context()
	e.start("mine", nil)

	done := e.submit("mine", "true")
	e.waitStatus(done, order.StatusSucceeded)
	theirs := e.submit("other", "true") // no worker of "other" runs

	n := 0
	forge := func(body []byte) {
		t.Helper()
		n++
		if _, err := js.Publish(ctx, queue.OrdersSubject+"mine", body,
			jetstream.WithMsgID("forged-"+uuid.NewString())); err != nil {
			t.Fatal(err)
		}
	}
	var real []uuid.UUID
	// A slow order first, so that what follows waits in the stream and
	// the claims after each real order are pipelined with its result.
	slow := e.submit("mine", "sleep", "0.5")
	real = append(real, slow)
	forge([]byte(slow.String())) // a replay of the order while it runs
	forge([]byte(theirs.String()))
	real = append(real, e.submit("mine", "true"))
	forge([]byte(done.String()))
	real = append(real, e.submit("mine", "true"))
	forge([]byte("urn:uuid:" + done.String()))
	forge([]byte("{" + theirs.String() + "}"))
	forge([]byte(uuid.NewString()))
	forge([]byte(uuid.Nil.String()))
	forge([]byte("not an order id"))
	forge(nil)
	forge(bytes.Repeat([]byte("a"), 512<<10))
	forge([]byte(strings.Repeat("\x00", 36)))
	real = append(real, e.submit("mine", "true"))
	for _, id := range real {
		e.waitStatus(id, order.StatusSucceeded)
	}

	for _, id := range append(real, done) {
		o, err := store.GetOrder(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var started int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'started'`, id).Scan(&started); err != nil {
			t.Fatal(err)
		}
		if o.Status != order.StatusSucceeded || o.Attempt != 1 || started != 1 {
			t.Errorf("order %s: %s, attempt %d, %d started events; want succeeded once", id, o.Status, o.Attempt, started)
		}
	}
	o, err := store.GetOrder(ctx, theirs)
	if err != nil {
		t.Fatal(err)
	}
	var events int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type <> 'submitted'`, theirs).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if o.Status != order.StatusQueued || o.Attempt != 0 || o.Worker != "" || events != 0 {
		t.Errorf("the other host's order: %s, attempt %d, worker %q, %d events besides its submission; want it untouched",
			o.Status, o.Attempt, o.Worker, events)
	}
	// Every forged message was settled: none is left for a redelivery.
	cons, err := js.Consumer(ctx, queue.OrdersStream, "host_mine")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the host's consumer to settle everything", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	t.Logf("%d forged messages settled", n)
}
