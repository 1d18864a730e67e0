package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestForgetHost: a host whose machine is gone for good stayed in the
// hosts list and the fleet gauges (offline for ever: OrderlyFleetHostsOffline
// fired for good once enough hosts were retired). An admin forgets it
// with DELETE /v1/hosts/{host}; refused while a worker serves it or one of
// its orders may still run, and for anyone else.
func TestForgetHost(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	// What a worker of "retired" left: its row in PostgreSQL, its durable
	// consumer, a heartbeat.
	if err := e.store.TouchHost(ctx, "retired", "1.0", "retired/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.HostConsumer(ctx, "retired"); err != nil {
		t.Fatal(err)
	}
	if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: "retired", Instance: "retired/1", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	forget := func(as string, want int, wantCode string) {
		t.Helper()
		code, body := e.do(as, http.MethodDelete, "/v1/hosts/retired", nil)
		if code != want {
			t.Fatalf("DELETE as %s: %d %s, want %d", as, code, body, want)
		}
		if wantCode != "" {
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || string(eb.Error.Code) != wantCode {
				t.Fatalf("DELETE as %s: %s, want code %s", as, body, wantCode)
			}
		}
	}
	forget("alice", http.StatusForbidden, "forbidden")
	forget("admin", http.StatusConflict, "conflict") // its worker beats

	// Its worker stops (a clean stop removes the heartbeat); an order is
	// queued for it.
	if err := e.q.Offline(ctx, "retired"); err != nil {
		t.Fatal(err)
	}
	o := e.submit("alice", map[string]any{"host": "retired", "command": "true"}, "", http.StatusAccepted)
	forget("admin", http.StatusConflict, "conflict")
	if code, body := e.do("alice", http.MethodPost, "/v1/orders/"+o.ID.String()+"/cancel", nil); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, body)
	}

	forget("admin", http.StatusNoContent, "")
	if code, body := e.do("admin", http.MethodGet, "/v1/hosts/retired", nil); code != http.StatusNotFound {
		t.Fatalf("GET the forgotten host: %d %s, want 404", code, body)
	}
	var list struct{ Hosts []api.Host }
	code, body := e.do("admin", http.MethodGet, "/v1/hosts", nil)
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
		t.Fatalf("hosts: %d %s", code, body)
	}
	for _, h := range list.Hosts {
		if h.Host == "retired" {
			t.Fatalf("the forgotten host is listed: %s", body)
		}
	}
	if _, err := e.q.JetStream().Consumer(ctx, queue.OrdersStream, queue.ConsumerName("retired")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the forgotten host's consumer: %v, want it deleted", err)
	}
	forget("admin", http.StatusNotFound, "not_found")

	// A worker that starts for it later makes it known again.
	if err := e.store.TouchHost(context.WithoutCancel(ctx), "retired", "1.1", "retired/2"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.do("admin", http.MethodGet, "/v1/hosts/retired", nil); code != http.StatusOK {
		t.Fatalf("GET the host seen again: %d, want 200", code)
	}
}
