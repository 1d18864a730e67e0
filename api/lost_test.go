package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestOrdersLostFromTheStream: an operator who purges the orders stream,
// or deletes it, takes the messages of accepted orders with it. Those
// orders end canceled, saying why, instead of staying queued for good
// while later orders of their host run; the API creates a deleted stream
// again, so submissions and readiness come back without a restart.
func TestOrdersLostFromTheStream(t *testing.T) {
	e := newAPIEnv(t, envOptions{lost: 300 * time.Millisecond})
	ctx := testenv.Context(t)
	submit := func(host string) api.Order {
		return e.submit("alice", map[string]any{"host": host, "command": "true"}, "", http.StatusAccepted)
	}
	// No worker serves these hosts: the orders stay queued.
	purged := []api.Order{submit("h-purge"), submit("h-purge")}
	kept := submit("h-keep")
	st, err := e.q.JetStream().Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(queue.OrdersSubject+"h-purge")); err != nil {
		t.Fatal(err)
	}
	later := submit("h-purge")
	for _, o := range purged {
		got := e.waitOrder(o.ID, "canceled")
		if got.Result == nil || got.Result.Error == nil || !strings.Contains(*got.Result.Error, "its message is gone from the ORDERLY_ORDERS stream") {
			t.Errorf("purged order %s: %+v", o.ID, got.Result)
		}
	}
	time.Sleep(time.Second) // a few more rounds of the search
	for _, o := range []api.Order{kept, later} {
		if got := e.order(o.ID); got.Status != "queued" {
			t.Errorf("order %s, whose message is there, is %s", o.ID, got.Status)
		}
	}

	if err := e.q.JetStream().DeleteStream(ctx, queue.OrdersStream); err != nil {
		t.Fatal(err)
	}
	if code, b := e.do("", "GET", "/readyz", nil); code != http.StatusOK {
		t.Errorf("readyz after the stream was deleted: %d %s", code, b)
	}
	after := submit("h-purge") // 202: the stream is there again
	for _, o := range []api.Order{kept, later} {
		e.waitOrder(o.ID, "canceled")
	}
	time.Sleep(time.Second)
	if got := e.order(after.ID); got.Status != "queued" {
		t.Errorf("order %s, submitted after the stream came back, is %s", after.ID, got.Status)
	}
}

// order reads an order as alice, who submitted it.
func (e *apiEnv) order(id uuid.UUID) api.Order {
	e.t.Helper()
	code, b := e.do("alice", "GET", "/v1/orders/"+id.String(), nil)
	var o api.Order
	if code != http.StatusOK || json.Unmarshal(b, &o) != nil {
		e.t.Fatalf("GET order %s: %d %s", id, code, b)
	}
	return o
}

// waitOrder waits up to 20 s for an order to reach status.
func (e *apiEnv) waitOrder(id uuid.UUID, status string) api.Order {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		o := e.order(id)
		if string(o.Status) == status {
			return o
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("order %s is %s, never %s", id, o.Status, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
