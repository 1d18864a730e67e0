package worker_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestHeartbeatTellsAWorkerCutOffFromPostgres: a worker whose login
// PostgreSQL refuses (its connections ended, as a restart, a rotated
// password or a full max_connections does) keeps its lease and retries,
// while its host's orders wait. Before, its heartbeat was that of a
// healthy worker, so the hosts listing and the fleet gauges showed the
// host online and fine, and its log said the same retry every 2 s. The
// heartbeat now carries since when and why PostgreSQL is unreachable,
// the log says it once and sums the outage up once when it ends, the
// lease stays with the worker throughout, and the queued order runs once
// the login is let in again.
func TestHeartbeatTellsAWorkerCutOffFromPostgres(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, wp := workerRole(t, pool, dsn, "pgreach")
	ctx := testenv.Context(t)
	var login string
	if err := wp.QueryRow(ctx, `SELECT current_user`).Scan(&login); err != nil {
		t.Fatal(err)
	}
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	e := &env{t: t, store: admin, q: q}
	logs := &testenv.LogBuffer{}
	opts := worker.Options{Host: "pgreach", Instance: "pgreach/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, TouchEvery: time.Hour} // the claims alone tell the outage
	runWorker(t, opts, ws, q, testenv.LoggerTo(io.MultiWriter(t.Output(), logs)))
	e.waitStatus(e.submit("pgreach", "true"), order.StatusSucceeded)

	beat := func() (queue.HostInfo, bool) {
		t.Helper()
		online, _, err := q.WorkersOf(ctx, "pgreach")
		if err != nil {
			t.Fatal(err)
		}
		h, ok := online["pgreach"]
		return h, ok
	}
	waitBeat := func(what string, cond func(queue.HostInfo) bool) queue.HostInfo {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			h, ok := beat()
			if ok && cond(h) {
				return h
			}
			if time.Now().After(end) {
				t.Fatalf("%s: not in 30 s; the heartbeat is %+v (online %v)", what, h, ok)
			}
		}
	}
	if h, _ := beat(); h.PostgresUnreachable != nil {
		t.Fatalf("a worker that reaches PostgreSQL reports an outage: %+v", h.PostgresUnreachable)
	}

	restore := func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := pool.Exec(c, "ALTER ROLE "+login+" LOGIN"); err != nil {
			t.Errorf("let %s log in again: %v", login, err)
		}
	}
	t.Cleanup(restore)
	cut := time.Now()
	for _, q := range []string{
		"ALTER ROLE " + login + " NOLOGIN",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + login + "'",
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	waiting := e.submit("pgreach", "true")
	h := waitBeat("the heartbeat reports PostgreSQL unreachable", func(h queue.HostInfo) bool {
		return h.PostgresUnreachable != nil && h.PostgresUnreachable.Failures >= 3
	})
	if o := h.PostgresUnreachable; o.Since.Before(cut.Add(-time.Second)) || !strings.Contains(o.Error, "not permitted to log in") {
		t.Errorf("the outage reported: %+v, want since the cut (%s) and the refusal of the login", o, cut.UTC())
	}
	if h.Instance != "pgreach/a" {
		t.Errorf("the host's heartbeat is %s's, want pgreach/a's: it keeps its lease", h.Instance)
	}
	if o, err := admin.GetOrder(ctx, waiting); err != nil || o.Status != order.StatusQueued {
		t.Fatalf("the order submitted during the cut: %+v (%v), want queued", o, err)
	}

	restore()
	if o := e.waitStatus(waiting, order.StatusSucceeded); o.Worker != "pgreach/a" || o.Attempt != 1 {
		t.Errorf("the order waited out the cut and ran on %s at attempt %d, want pgreach/a at 1", o.Worker, o.Attempt)
	}
	waitBeat("the heartbeat clears the outage", func(h queue.HostInfo) bool { return h.PostgresUnreachable == nil })

	out := logs.String()
	if n := strings.Count(out, claimRetry); n != 1 {
		t.Errorf("the claim's retry logged at warn %d times, want once for the outage:\n%s", n, out)
	}
	if n := strings.Count(out, "postgresql answers again"); n != 1 || !strings.Contains(out, "failed_attempts=") {
		t.Errorf("the outage's summary logged %d times, want once with its count:\n%s", n, out)
	}

	// A claim PostgreSQL answers but refuses (a trigger raising) is not an
	// outage of the database: retried and logged at each retry as before,
	// the heartbeat says nothing of PostgreSQL being unreachable.
	for _, q := range []string{
		`CREATE FUNCTION refuse_for_test() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$`,
		`CREATE TRIGGER refuse_for_test BEFORE UPDATE ON orders FOR EACH ROW WHEN (OLD.status = 'queued' AND NEW.status = 'running') EXECUTE FUNCTION refuse_for_test()`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	refused := e.submit("pgreach", "true")
	for end := time.Now().Add(30 * time.Second); strings.Count(logs.String(), claimRetry) < 5; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the refused claim's retries are not logged at warn:\n%s", logs.String())
		}
	}
	time.Sleep(2 * opts.Heartbeat) // a heartbeat written after the retries
	if h, ok := beat(); !ok || h.PostgresUnreachable != nil {
		t.Errorf("a claim refused by a trigger: heartbeat %+v (online %v), want online and no outage", h, ok)
	}
	if _, err := pool.Exec(ctx, `DROP TRIGGER refuse_for_test ON orders`); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(refused, order.StatusSucceeded)
}

const claimRetry = `level=WARN msg="claim order; retrying"`

// TestHeartbeatTellsAnIdleWorkerCutOffFromPostgres: a worker with nothing
// to run makes no statement but its touch of the hosts table (every
// minute), which logged its failure at debug level: cut off from
// PostgreSQL, it showed healthy until an order came and waited. The
// touch's failure now starts the outage its heartbeat reports, and the
// next touch PostgreSQL takes ends it.
func TestHeartbeatTellsAnIdleWorkerCutOffFromPostgres(t *testing.T) {
	dsn := testenv.Postgres(t)
	_, pool := testenv.Store(t, dsn)
	ws, wp := workerRole(t, pool, dsn, "pgidle")
	ctx := testenv.Context(t)
	var login string
	if err := wp.QueryRow(ctx, `SELECT current_user`).Scan(&login); err != nil {
		t.Fatal(err)
	}
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})
	logs := &testenv.LogBuffer{}
	opts := worker.Options{Host: "pgidle", Instance: "pgidle/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, TouchEvery: 300 * time.Millisecond}
	runWorker(t, opts, ws, q, testenv.LoggerTo(io.MultiWriter(t.Output(), logs)))
	waitBeat := func(what string, cond func(queue.HostInfo) bool) {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			online, _, err := q.WorkersOf(ctx, "pgidle")
			if err != nil {
				t.Fatal(err)
			}
			h, ok := online["pgidle"]
			if ok && h.Instance == "pgidle/a" && cond(h) {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: not in 30 s; the heartbeat is %+v (online %v)", what, h, ok)
			}
		}
	}
	// Consuming, past its takeover's statements: a worker cut off in
	// its takeover retries it without a heartbeat (offline), another case.
	for end := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), `msg="worker consuming"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the worker never consumed:\n%s", logs.String())
		}
	}
	waitBeat("the worker online", func(queue.HostInfo) bool { return true })
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := pool.Exec(c, "ALTER ROLE "+login+" LOGIN"); err != nil {
			t.Errorf("let %s log in again: %v", login, err)
		}
	})
	for _, s := range []string{
		"ALTER ROLE " + login + " NOLOGIN",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + login + "'",
	} {
		if _, err := pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	waitBeat("the idle worker's heartbeat reports PostgreSQL unreachable", func(h queue.HostInfo) bool {
		return h.PostgresUnreachable != nil && strings.Contains(h.PostgresUnreachable.Error, "not permitted to log in")
	})
	if !strings.Contains(logs.String(), `level=WARN msg="record that the host is alive; retrying"`) {
		t.Errorf("the idle worker's log does not say PostgreSQL failed it:\n%s", logs.String())
	}
	if _, err := pool.Exec(ctx, "ALTER ROLE "+login+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	waitBeat("the heartbeat clears the outage", func(h queue.HostInfo) bool { return h.PostgresUnreachable == nil })
	if n := strings.Count(logs.String(), "postgresql answers again"); n != 1 {
		t.Errorf("the outage's summary logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestTakeoverEndsAnOutageOfAnEarlierTenure: a worker whose claims
// PostgreSQL refused, and which lost its host meanwhile (a rival took the
// lease), takes the host again once both are back. Its takeover reached
// PostgreSQL, yet its heartbeat went on reporting the earlier outage,
// with its old since, until its next statement: for an idle worker its
// touch of the hosts table, up to a minute later (here an hour, so the
// report stayed).
func TestTakeoverEndsAnOutageOfAnEarlierTenure(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, wp := workerRole(t, pool, dsn, "pgretake")
	ctx := testenv.Context(t)
	var login string
	if err := wp.QueryRow(ctx, `SELECT current_user`).Scan(&login); err != nil {
		t.Fatal(err)
	}
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 3 * time.Second})
	e := &env{t: t, store: admin, q: q}
	logs := &testenv.LogBuffer{}
	opts := worker.Options{Host: "pgretake", Instance: "pgretake/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, TouchEvery: time.Hour} // the claim alone tells the outage
	runWorker(t, opts, ws, q, testenv.LoggerTo(io.MultiWriter(t.Output(), logs)))
	waitLog := func(what, line string) {
		t.Helper()
		testenv.WaitUntil(t, 30*time.Second, what, func() bool { return strings.Contains(logs.String(), line) })
	}
	waitBeat := func(what string, cond func(queue.HostInfo) bool) {
		t.Helper()
		testenv.WaitUntil(t, 30*time.Second, what, func() bool {
			online, _, err := q.WorkersOf(ctx, "pgretake")
			h, ok := online["pgretake"]
			return err == nil && ok && h.Instance == "pgretake/a" && cond(h)
		})
	}
	waitLog("the worker consuming", `msg="worker consuming"`)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := pool.Exec(c, "ALTER ROLE "+login+" LOGIN"); err != nil {
			t.Errorf("let %s log in again: %v", login, err)
		}
	})
	for _, s := range []string{
		"ALTER ROLE " + login + " NOLOGIN",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + login + "'",
	} {
		if _, err := pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	id := e.submit("pgretake", "true")
	waitBeat("the claim's failures reported", func(h queue.HostInfo) bool { return h.PostgresUnreachable != nil })

	// A rival takes the lease: the tenure ends.
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "lease.pgretake", []byte("rival")); err != nil {
		t.Fatal(err)
	}
	waitLog("the tenure ends", "stopped consuming the host's orders")
	// Nothing for the next tenure to claim: a claim would end the
	// outage by itself.
	if _, err := admin.Cancel(ctx, id, "test", "nothing to claim"); err != nil {
		t.Fatal(err)
	}
	st, err := q.JetStream().Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("orderly.orders.pgretake")); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ALTER ROLE "+login+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	// The rival's key expires (the lease's TTL); the worker takes the
	// host again, its takeover's statements taken by PostgreSQL.
	testenv.WaitUntil(t, 30*time.Second, "the host taken again", func() bool {
		return strings.Count(logs.String(), `msg="worker consuming"`) >= 2
	})
	waitBeat("the heartbeat of the new tenure clears the outage", func(h queue.HostInfo) bool { return h.PostgresUnreachable == nil })
}
