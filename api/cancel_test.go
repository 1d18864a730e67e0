package api_test

import (
	"encoding/json"
	"net/http"
	"testing"

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
	if ok, err := e.store.InterruptAttempt(ctx, o.ID, 1, "gone/2", "its worker died"); err != nil || !ok {
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
