package worker_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// BenchmarkBacklog measures the worker's per-order cost on one host: b.N
// orders of /bin/true are queued first, then one worker drains them. It
// uses the test PostgreSQL (fsync off), so it isolates CPU from disk; make
// bench measures the production configuration.
func BenchmarkBacklog(b *testing.B) {
	e := newEnv(b)
	backlog(b, e, e.store)
}

// BenchmarkBacklogAsHostLogin is BenchmarkBacklog with the worker connected
// as a login of orderly_worker listed for its host (docs/sql.md): what row
// security costs the worker per order.
func BenchmarkBacklogAsHostLogin(b *testing.B) {
	dsn := testenv.Postgres(b)
	admin, pool := testenv.Store(b, dsn)
	ws, _ := workerRole(b, pool, dsn, "bench")
	e := &env{t: b, store: admin, q: testenv.Queue(b, testenv.NATS(b), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	backlog(b, e, ws)
}

// backlog queues b.N orders with e's store and drains them with a worker
// that uses ws.
func backlog(b *testing.B, e *env, ws *postgres.Store) {
	ids := make([]uuid.UUID, b.N)
	for i := range ids {
		ids[i] = e.submit("bench", "true")
	}
	b.ResetTimer()
	stop, _ := runWorker(b, worker.Options{Host: "bench", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, ws, e.q, testenv.Logger(b))
	e.waitStatus(ids[len(ids)-1], order.StatusSucceeded)
	b.StopTimer()
	stop()
}
