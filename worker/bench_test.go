package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// BenchmarkBacklog measures the worker's per-order cost on one host: b.N
// orders of /bin/true are queued first, then one worker drains them. It
// uses the test PostgreSQL (fsync off), so it isolates CPU from disk; make
// bench measures the production configuration.
func BenchmarkBacklog(b *testing.B) {
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	store := postgres.New(pool)
	nc, err := queue.Connect(testenv.NATS(b), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	q, err := queue.New(ctx, nc, queue.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]uuid.UUID, b.N)
	for i := range ids {
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "bench", Command: "true",
			Timeout: 10 * time.Second, Principal: "bench", Source: "rest", CaptureStdout: true, CaptureStderr: true}
		if _, err := store.InsertOrder(ctx, o); err != nil {
			b.Fatal(err)
		}
		if _, err := q.Publish(ctx, "bench", o.ID); err != nil {
			b.Fatal(err)
		}
		ids[i] = o.ID
	}
	hp, err := hostpolicy.New(config.Default().Worker)
	if err != nil {
		b.Fatal(err)
	}
	logger := testenv.Logger(b)
	w := worker.New(worker.Options{Host: "bench"}, store, q, hp, executor.New(logger), logger)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	b.ResetTimer()
	go func() { done <- w.Run(wctx) }()
	last := ids[len(ids)-1]
	for {
		o, err := store.GetOrder(ctx, last)
		if err != nil {
			b.Fatal(err)
		}
		if o.Status.Terminal() {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-done
}
