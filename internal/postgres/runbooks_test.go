package postgres_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// TestRefusedRunHistory checks that a refused runbook run's history reads
// as docs/sql.md says every history does: "submitted" first, then its one
// terminal event, so that the outcome query (the last event with a status)
// answers rejected, as orders.status does.
func TestRefusedRunHistory(t *testing.T) {
	e := newStoreEnv(t)
	o := &order.Order{ID: order.NewID(), Kind: order.KindScript, Host: "web-3", Command: "runbook:deploy.md",
		Timeout: time.Minute, Principal: "alice", Source: "rest",
		Script: &order.Script{Runbook: "deploy.md", SHA256: "ab12"}}
	if err := e.store.RecordRefusedRun(e.ctx, o, "RBAC check failed"); err != nil {
		t.Fatal(err)
	}
	evs, err := e.store.Events(e.ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Type+"/"+ev.Status)
	}
	if len(got) != 2 || got[0] != "submitted/queued" || got[1] != "rejected/rejected" {
		t.Fatalf("events %v, want [submitted/queued rejected/rejected]", got)
	}
	if evs[1].Detail["reason"] != "RBAC check failed" || evs[1].Detail["attempt"] != float64(0) {
		t.Errorf("rejected event detail %v, want the reason and attempt 0", evs[1].Detail)
	}
	var outcome string
	if err := e.pool.QueryRow(e.ctx, `SELECT DISTINCT ON (order_id) status
		FROM order_events WHERE status IS NOT NULL AND order_id = $1
		ORDER BY order_id, id DESC`, o.ID).Scan(&outcome); err != nil {
		t.Fatal(err)
	}
	if outcome != string(order.StatusRejected) {
		t.Errorf("outcome by the last event with a status: %q, want rejected", outcome)
	}
}
