package worker_test

import (
	"runtime/metrics"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

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

// BenchmarkBacklogBehindPgBouncer is BenchmarkBacklog with the worker's
// store behind a real PgBouncer in transaction mode (three server
// connections), as docs/scaling.md runs a fleet's workers: the pooler's
// hop on every statement, and pgx's statements sent unnamed
// (cache_describe, which the store chooses when it sees the pooler).
// BenchmarkBacklogDescribed splits the two.
func BenchmarkBacklogBehindPgBouncer(b *testing.B) {
	dsn := testenv.Postgres(b)
	admin, _ := testenv.Store(b, dsn)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	ws, _ := testenv.Store(b, testenv.StartPgBouncer(b, dsn, 3).DSN(cfg.Database, ""))
	e := &env{t: b, store: admin, q: testenv.Queue(b, testenv.NATS(b), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	backlog(b, e, ws)
}

// BenchmarkBacklogDescribed is BenchmarkBacklog with the worker's store
// on a direct connection that sends its statements unnamed
// (default_query_exec_mode=cache_describe): what that mode costs per
// order without a pooler's hop.
func BenchmarkBacklogDescribed(b *testing.B) {
	dsn := testenv.Postgres(b)
	admin, _ := testenv.Store(b, dsn)
	ws, _ := testenv.Store(b, dsn+"&default_query_exec_mode=cache_describe")
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

// BenchmarkBacklogCounted is BenchmarkBacklog counted in what does not
// follow the machine's load: goroutines created and allocations per
// order (this process: the worker, the embedded NATS server, and the
// test's check for the last order every 200 ms), and CPU per order
// (this process's user and system time; PostgreSQL and the commands are
// other processes). Run it with a fixed count (-benchtime=300x): the
// worker's start is in every figure, divided by the orders.
func BenchmarkBacklogCounted(b *testing.B) {
	e := newEnv(b)
	ids := make([]uuid.UUID, b.N)
	for i := range ids {
		ids[i] = e.submit("bench", "true")
	}
	b.ReportAllocs()
	var before, after unix.Rusage
	gBefore := goroutinesCreated()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	b.ResetTimer()
	stop, _ := runWorker(b, worker.Options{Host: "bench", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, testenv.Logger(b))
	for last := ids[len(ids)-1]; ; time.Sleep(200 * time.Millisecond) {
		o, err := e.store.GetOrder(b.Context(), last)
		if err != nil {
			b.Fatal(err)
		}
		if o.Status == order.StatusSucceeded {
			break
		}
		if o.Status.Terminal() {
			b.Fatalf("order %s is %s", last, o.Status)
		}
	}
	b.StopTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	g := goroutinesCreated() - gBefore
	stop()
	cpu := func(r unix.Rusage) int64 { return r.Utime.Nano() + r.Stime.Nano() }
	b.ReportMetric(float64(cpu(after)-cpu(before))/1e3/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(g)/float64(b.N), "goroutines/op")
}

// goroutinesCreated is the process's count of goroutines created so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
