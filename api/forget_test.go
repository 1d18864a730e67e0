package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/postgres"
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
	// One order, said so: "has 1 orders queued or running: cancel them".
	if _, body := e.do("admin", http.MethodDelete, "/v1/hosts/retired", nil); !strings.Contains(string(body), "has 1 order queued or running: cancel it first") {
		t.Fatalf("DELETE with one order queued: %s", body)
	}
	if code, body := e.do("alice", http.MethodPost, "/v1/orders/"+o.ID.String()+"/cancel", nil); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, body)
	}

	forget("admin", http.StatusNoContent, "")
	if code, body := e.do("admin", http.MethodGet, "/v1/hosts/retired", nil); code != http.StatusNotFound || !strings.Contains(string(body), `unknown host \"retired\"`) {
		t.Fatalf("GET the forgotten host: %d %s, want 404 naming it", code, body)
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

// TestForgetHostAbandoningItsOrders: a host whose worker died for good
// while it ran an order could not be forgotten (the order stayed running,
// and only a stand-in worker for the host could settle it, re-running an
// idempotent one). With abandon=true an admin forgets it with its orders:
// the running one interrupted, the queued one canceled, each with its
// event by the admin. A live worker still refuses it. Each settled order
// ends as one the API cancels does: its line, its count in
// orderly_orders_finished_total and its finished event (for a client
// waiting on it); before, the forget logged only a count of them.
func TestForgetHostAbandoningItsOrders(t *testing.T) {
	logs := &testenv.LogBuffer{}
	m := metrics.New()
	e := newAPIEnv(t, envOptions{logger: slog.New(slog.NewJSONHandler(logs, nil)), metrics: m})
	ctx := testenv.Context(t)
	running := e.submit("alice", map[string]any{"host": "dead", "command": "sleep", "args": []string{"60"}}, "", http.StatusAccepted)
	queued := e.submit("alice", map[string]any{"host": "dead", "command": "true"}, "", http.StatusAccepted)
	sub, events, err := e.q.SubscribeEvents("dead", queued.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if _, _, err := e.store.TakeHost(ctx, "dead", "1.0", postgres.Owner{Instance: "dead/1"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(ctx, running.ID, "dead/1", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if err := e.q.Heartbeat(ctx, queue.HostInfo{Host: "dead", Instance: "dead/1", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	forget := func(as, query string, want int, wantCode, wantText string) {
		t.Helper()
		code, body := e.do(as, http.MethodDelete, "/v1/hosts/dead"+query, nil)
		var eb api.ErrorBody
		if code != want || wantCode != "" && (json.Unmarshal(body, &eb) != nil || string(eb.Error.Code) != wantCode ||
			!strings.Contains(eb.Error.Message, wantText)) {
			t.Fatalf("DELETE%s as %s: %d %s, want %d %s", query, as, code, body, want, wantCode)
		}
	}
	forget("admin", "?abandon=true", http.StatusConflict, "conflict", "has a live worker") // it beats
	// Saying why a worker just killed still counts.
	forget("admin", "?abandon=true", http.StatusConflict, "conflict", "counts as live until its last heartbeat expires")
	if err := e.q.Offline(ctx, "dead"); err != nil {
		t.Fatal(err)
	}
	forget("admin", "", http.StatusConflict, "conflict", "or abandon them with the host (abandon=true)")
	forget("admin", "?abandon=yes", http.StatusBadRequest, "invalid_request", "abandon must be true or false")
	forget("alice", "?abandon=true", http.StatusForbidden, "forbidden", "admin role")
	forget("admin", "?abandon=true", http.StatusNoContent, "", "")

	for _, c := range []struct {
		id     string
		status string
		reason string
	}{
		{running.ID.String(), "interrupted", "its host dead was forgotten by admin while it ran: its worker never came back"},
		{queued.ID.String(), "canceled", "its host dead was forgotten by admin before it ran"},
	} {
		var o api.Order
		code, body := e.do("admin", http.MethodGet, "/v1/orders/"+c.id, nil)
		if err := json.Unmarshal(body, &o); code != http.StatusOK || err != nil || string(o.Status) != c.status ||
			o.Result == nil || o.Result.Error == nil || !strings.Contains(*o.Result.Error, c.reason) {
			t.Fatalf("order %s after the host was abandoned: %d %s, want %s", c.id, code, body, c.status)
		}
		var actor string
		if err := e.pool.QueryRow(ctx, `SELECT actor FROM order_events WHERE order_id = $1 AND type = $2`, c.id, c.status).Scan(&actor); err != nil || actor != "admin" {
			t.Fatalf("order %s's %s event: actor %q %v", c.id, c.status, actor, err)
		}
	}
	if code, body := e.do("admin", http.MethodGet, "/v1/hosts/dead", nil); code != http.StatusNotFound {
		t.Fatalf("GET the forgotten host: %d %s, want 404", code, body)
	}

	for msg, id := range map[string]string{"order interrupted": running.ID.String(), "order canceled": queued.ID.String()} {
		lines := logLines(t, logs, msg)
		if len(lines) != 1 || lines[0]["order_id"] != id || lines[0]["host"] != "dead" || lines[0]["principal"] != "alice" || lines[0]["actor"] != "admin" {
			t.Errorf("%q lines: %v, want one for %s by admin", msg, lines, id)
		}
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		`orderly_orders_finished_total{host="dead",status="interrupted"} 1`,
		`orderly_orders_finished_total{host="dead",status="canceled"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for {
		select {
		case ev := <-events:
			if ev.Type != "finished" {
				continue
			}
			if ev.Status != "canceled" {
				t.Errorf("finished event of the queued order: %+v", ev)
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("no finished event for the queued order of the abandoned host")
		}
	}
}
