package intake_test

import (
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestDropEndedNamesOrdersItDoesNotKnow: after PostgreSQL is restored from
// a backup, the orders stream holds messages of orders accepted after the
// backup, which no row records. On a host with a worker, the worker drops
// each with an ERROR line naming it; on a host with none, DropEnded
// dropped them with a count only, so the operator had no way to tell
// which accepted orders were lost. Each is now logged by id.
func TestDropEndedNamesOrdersItDoesNotKnow(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	var logs testenv.LogBuffer
	svc := intake.New(e.store, e.pub, nil, intake.Options{}, testenv.LoggerTo(&logs))
	lost := order.NewID() // accepted after the backup: published, no row
	if _, err := e.q.Publish(e.ctx, "hrestored", lost); err != nil {
		t.Fatal(err)
	}
	o, err := e.svc.Submit(e.ctx, alice, newOrder("hrestored", "true"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.Cancel(e.ctx, o.ID, "test", "canceled by the test"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}

	if n, err := svc.DropEnded(e.ctx); err != nil || n != 2 {
		t.Fatalf("DropEnded = %d, %v; want both messages dropped", n, err)
	}
	var named []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "not in the database") {
			named = append(named, l)
		}
	}
	if len(named) != 1 || !strings.Contains(named[0], lost.String()) || !strings.Contains(named[0], "level=ERROR") {
		t.Fatalf("log lines about orders not in the database: %q; want one ERROR naming %s", named, lost)
	}
}
