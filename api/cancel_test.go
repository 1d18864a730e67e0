package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestInterruptedOrderShowsItsCancel: an order whose cancel was requested
// while it ran, and whose worker died before it could signal it, ends
// interrupted by the next owner of the host; its GET still says who
// asked to cancel it, and when, as a killed order's does. Before, only a
// running, killed or canceled order's request was looked up.
func TestInterruptedOrderShowsItsCancel(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	o := e.submit("alice", map[string]any{"host": "gone", "command": "sleep", "args": []string{"60"}}, "", http.StatusAccepted)
	if _, _, err := e.store.TakeHost(ctx, "gone", "1.0", postgres.Owner{Instance: "gone/1"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(ctx, o.ID, "gone/1", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if code, body := e.do("alice", http.MethodPost, "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{"signal": "SIGINT"}); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, body)
	}
	// The worker died; its successor settles the order it left.
	if _, _, err := e.store.TakeHost(ctx, "gone", "1.0", postgres.Owner{Instance: "gone/2"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.InterruptAttempt(ctx, o.ID, 1, "gone/2", "its worker died", nil); err != nil || !ok {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	code, body := e.do("alice", http.MethodGet, "/v1/orders/"+o.ID.String(), nil)
	var got api.Order
	if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil || got.Status != "interrupted" {
		t.Fatalf("GET: %d %s", code, body)
	}
	if got.Cancel == nil || got.Cancel.Actor != "alice" || got.Cancel.Signal != "SIGINT" || got.Cancel.RequestedAt.IsZero() {
		t.Fatalf("the interrupted order's cancel request: %+v, want alice's SIGINT", got.Cancel)
	}
}

// TestCancelAnswersWithNATSDown: the cancel of a running order is
// recorded in PostgreSQL and answered 202 while NATS is down, without
// host_online (unknown), and at once: the lookup of the host's heartbeat
// waited out two NATS request timeouts, 10 s, after the request was
// already on record.
func TestCancelAnswersWithNATSDown(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL()})
	ctx := testenv.Context(t)
	o := e.submit("alice", map[string]any{"host": "cut", "command": "sleep", "args": []string{"60"}}, "", http.StatusAccepted)
	if _, _, err := e.store.TakeHost(ctx, "cut", "1.0", postgres.Owner{Instance: "cut/1"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(ctx, o.ID, "cut/1", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/orders/"+o.ID.String()+"/cancel", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("cancel with NATS down: %v", err)
	}
	defer resp.Body.Close()
	var got api.Order
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cancel with NATS down: %d, %v", resp.StatusCode, err)
	}
	if got.Cancel == nil || got.Cancel.Actor != "alice" || got.Cancel.HostOnline != nil {
		t.Fatalf("cancel: %+v, want alice's request without host_online", got.Cancel)
	}
}
