package worker

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUnclaimSaysWhenItHandedNothingBack: an order this worker claimed
// and a successor then recorded interrupted (the host taken over while
// this worker waited to start it) is not handed back by unclaim, and the
// worker does not say it was: Unclaim's "no" was dropped, and the INFO
// "order handed back unstarted" named an order left interrupted.
func TestUnclaimSaysWhenItHandedNothingBack(t *testing.T) {
	ctx := testenv.Context(t)
	store, _ := testenv.Store(t, testenv.Postgres(t))
	const host, instance = "unclaimed", "unclaimed/1"
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
		Timeout: 10 * time.Second, Principal: "test", Source: "rest"}
	if _, err := store.InsertOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.TakeHost(ctx, host, "test", postgres.Owner{Instance: instance}); err != nil {
		t.Fatal(err)
	}
	claimed, ok, err := store.Claim(ctx, o.ID, instance, 1)
	if err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	// The successor takes the host and settles the attempt it finds.
	if _, _, err := store.TakeHost(ctx, host, "test", postgres.Owner{Instance: "unclaimed/2"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := store.InterruptAttempt(ctx, o.ID, claimed.Attempt, "unclaimed/2", "taken over", nil); err != nil || !ok {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	logs := &testenv.LogBuffer{}
	w := &Worker{opts: Options{Host: host, Instance: instance}, store: store, logger: slog.New(slog.NewJSONHandler(logs, nil))}
	if handed, err := w.unclaim(ctx, nil, claimed, "the worker stopped before it could start"); err != nil || handed {
		t.Fatalf("unclaim: handed %v, %v; want nothing handed back", handed, err)
	}
	if got, err := store.GetOrder(ctx, o.ID); err != nil || got.Status != order.StatusInterrupted {
		t.Fatalf("the order after unclaim: %+v %v, want interrupted, as the successor left it", got, err)
	}
	if strings.Contains(logs.String(), `"order handed back unstarted`) {
		t.Errorf("the worker says it handed back an order it did not:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"order not handed back`) {
		t.Errorf("the worker does not say the order was not handed back:\n%s", logs.String())
	}
}
