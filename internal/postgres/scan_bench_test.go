package postgres_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// BenchmarkGetFinishedOrder reads a finished order as the answer to a
// synchronous submit does: one statement and scanOrder. Its allocations
// per read are the measure (docs/benchmarks.md, "Serve's hand-offs per
// order, counted").
func BenchmarkGetFinishedOrder(b *testing.B) {
	ctx := testenv.Context(b)
	store, _ := testenv.Store(b, testenv.Postgres(b))
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "bench-scan", Command: "true",
		Timeout: time.Minute, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := store.InsertOrder(ctx, o); err != nil {
		b.Fatal(err)
	}
	if _, _, err := store.TakeHost(ctx, "bench-scan", "test", postgres.Owner{Instance: "w1"}); err != nil {
		b.Fatal(err)
	}
	if _, claimed, err := store.Claim(ctx, o.ID, "w1", 1); err != nil || !claimed {
		b.Fatalf("claim: %v %v", claimed, err)
	}
	code := 0
	if err := store.Complete(ctx, o.ID, 1, postgres.Finish{Status: order.StatusSucceeded, Actor: "w1",
		Result: order.Result{ExitCode: &code, DurationMS: 5, Stdout: order.Output{Content: []byte("ok\n"), Bytes: 3}}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := store.GetOrder(ctx, o.ID)
		if err != nil || got.Status != order.StatusSucceeded {
			b.Fatalf("%v %v", got, err)
		}
	}
}
