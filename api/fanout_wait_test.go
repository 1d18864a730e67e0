package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// listCounter is the real store, counting ListOrders calls.
type listCounter struct {
	api.Store
	n *atomic.Int64
}

func (c listCounter) ListOrders(ctx context.Context, f postgres.Filter) ([]*order.Order, *uuid.UUID, error) {
	c.n.Add(1)
	return c.Store.ListOrders(ctx, f)
}

// TestFanOutWaitIsWokenByEvents: a fan-out's ?wait polled PostgreSQL ten
// times a second until its orders ended (300 waiting fan-outs kept the
// pool busy and slowed every other request). It is woken by the orders'
// finished events now, and polls once a second.
func TestFanOutWaitIsWokenByEvents(t *testing.T) {
	var lists atomic.Int64
	e := newAPIEnv(t, envOptions{hosts: []string{"fw-a", "fw-b"},
		store: func(s api.Store) api.Store { return listCounter{Store: s, n: &lists} }})
	code, b := e.do("alice", "POST", "/v1/orders?wait=20", map[string]any{"hosts": []string{"fw-a", "fw-b"},
		"command": "sleep", "args": []string{"3"}})
	var batch api.Batch
	if err := json.Unmarshal(b, &batch); code != http.StatusOK || err != nil || batch.Counts["succeeded"] != 2 {
		t.Fatalf("fan-out ?wait: %d %s", code, b)
	}
	// Over the 3 s the orders ran: about 30 reads polling every 100 ms;
	// one a second, the finished events and the answer's own read now.
	if n := lists.Load(); n > 10 {
		t.Errorf("the fan-out read its orders %d times while they ran 3 s", n)
	}
}
