// Package testenv gives tests the real dependencies: a PostgreSQL cluster
// (one per test binary, a fresh migrated database per test) and an embedded
// NATS server per test. There are no mocks; a machine without PostgreSQL
// fails the tests loudly instead of skipping them.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// and then, in a test:
//
//	dsn := testenv.Postgres(t)
//	natsURL := testenv.NATS(t)
package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/migrations"
)

// templateDB is migrated once per test binary; every test's database is a
// copy of it, which is much faster than migrating each one.
const templateDB = "orderly_template"

// setupTimeout bounds starting the cluster and migrating the template.
// It is no test's measure, only a stop for a setup that hangs: at a load
// average of 48 on two cores initdb alone ran past 2 minutes, and every
// test of the package (internal/intake) failed with its deadline.
const setupTimeout = 5 * time.Minute

// cluster is the test binary's PostgreSQL. It is package state, unlike
// everywhere else in orderly, because testing.M offers no other way to share
// a resource between TestMain and the tests; Main owns it.
var cluster struct {
	mu       sync.Mutex
	binDir   string // set by Main; empty means Main was not called
	dir      string
	srv      *pgembed.Server
	admin    *pgxpool.Pool
	stopWD   func()
	strategy string // the CREATE DATABASE clause for the fastest copy
	err      error  // a failed start or migration, reported to every test
	ready    bool   // the template is migrated
	counter  atomic.Int64
}

// Main runs the package's tests with PostgreSQL available and exits with
// their status. The cluster itself starts on the first call to Postgres, so
// test binaries (or -run selections) that never ask for one do not pay for
// it; missing PostgreSQL binaries fail the whole binary at once.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit, for a TestMain with its own cleanup to do
// before it exits (os.Exit runs no deferred calls).
func Run(m *testing.M) int {
	catchIgnoredSignals()
	binDir, err := pgembed.FindBinaries()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		return 1
	}
	cluster.binDir = binDir
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// catchIgnoredSignals catches SIGINT and SIGHUP, and drops them, when the
// test binary was started with them ignored: a background job of a shell
// without job control (`make test &` in a script) ignores SIGINT, nohup
// SIGHUP, and Go keeps an inherited SIG_IGN for these two, which every
// process the binary starts inherits across exec, orders of its
// in-process workers included: such an order ignored a cancel's SIGINT
// and ended by the kill's SIGKILL instead. A caught signal is reset to
// its default in a child. orderly's own binary catches SIGINT (main) and
// so gives its orders the default.
func catchIgnoredSignals() {
	var sigs []os.Signal
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGHUP} {
		if signal.Ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) > 0 {
		// Nobody reads it: signal drops what does not fit, as the
		// ignored signals were dropped.
		signal.Notify(make(chan os.Signal, 1), sigs...)
	}
}

// Postgres returns the URL of a new database for t, a copy of the migrated
// template, dropped when t ends.
func Postgres(t testing.TB) string {
	t.Helper()
	admin, srv, err := setup()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	name := fmt.Sprintf("t_%d", cluster.counter.Add(1))
	if err := adminExec(ctx, admin, "CREATE DATABASE "+name+" TEMPLATE "+templateDB+cluster.strategy); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE ends sessions the test left open (a pool not closed, say).
		if err := adminExec(ctx, admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	return srv.DSNFor(name)
}

// adminExec runs sql on the admin pool, and again while the cluster
// cannot take it yet: after a test crashed it (a backend killed with
// SIGKILL, as the worker's TestPostgresCrashAtEachStepOfAnOrder does),
// the server refuses connections until its recovery ends (57P03), and a
// connection broken before the statement was sent is safe to retry.
func adminExec(ctx context.Context, admin *pgxpool.Pool, sql string) error {
	for {
		_, err := admin.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if err == nil || !pgconn.SafeToRetry(err) && !(errors.As(err, &pgErr) && pgErr.Code == "57P03") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// setup starts the cluster and migrates the template the first time it is
// called, and returns what Postgres needs.
func setup() (*pgxpool.Pool, *pgembed.Server, error) {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	if cluster.binDir == "" {
		return nil, nil, fmt.Errorf("call testenv.Main from TestMain to use testenv.Postgres")
	}
	if cluster.err != nil {
		return nil, nil, cluster.err
	}
	if !cluster.ready {
		cluster.err = start()
		if cluster.err != nil {
			return nil, nil, cluster.err
		}
		cluster.ready = true
	}
	return cluster.admin, cluster.srv, nil
}

// start runs under cluster.mu.
func start() error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "orderly-test-pg-")
	if err != nil {
		return err
	}
	cluster.dir = dir
	// MkdirTemp makes 0700 directories; as root, the postgres user running
	// the cluster must be able to enter it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	srv, err := pgembed.Start(ctx, pgembed.Options{
		Dir:      dir,
		BinDir:   cluster.binDir,
		Database: "postgres", // exists already; tests get their own
		// Durability is pointless for a cluster deleted after the run.
		Fsync: false,
		ExtraSettings: map[string]string{
			"synchronous_commit": "off",
			"full_page_writes":   "off",
		},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	cluster.srv = srv
	if cluster.stopWD, err = startWatchdog(dir); err != nil {
		return err
	}
	adminCfg, err := pgxpool.ParseConfig(srv.DSNFor("postgres"))
	if err != nil {
		return err
	}
	// A test that crashes the cluster breaks the idle connections, which
	// pgxpool checks only after a second idle; the admin pool's few
	// statements can afford a ping each.
	adminCfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	if cluster.admin, err = pgxpool.NewWithConfig(ctx, adminCfg); err != nil {
		return fmt.Errorf("connect to test cluster: %w", err)
	}
	// PostgreSQL 15 copies databases through the WAL by default: ~4x slower
	// than copying the files for a small template when fsync is off.
	var version int
	if err := cluster.admin.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return fmt.Errorf("query test cluster version: %w", err)
	}
	if version >= 150000 {
		cluster.strategy = " STRATEGY FILE_COPY"
	}
	if _, err := cluster.admin.Exec(ctx, "CREATE DATABASE "+templateDB); err != nil {
		return fmt.Errorf("create %s: %w", templateDB, err)
	}
	if _, err := migrations.Up(ctx, srv.DSNFor(templateDB), nil); err != nil {
		return fmt.Errorf("migrate %s: %w", templateDB, err)
	}
	// Nobody may connect to the template any more: CREATE DATABASE fails
	// while its source has sessions.
	if _, err := cluster.admin.Exec(ctx, "ALTER DATABASE "+templateDB+" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("seal %s: %w", templateDB, err)
	}
	return nil
}

// shutdown stops whatever start started, in reverse order.
func shutdown() error {
	cluster.mu.Lock()
	defer cluster.mu.Unlock()
	var err error
	if cluster.admin != nil {
		cluster.admin.Close()
	}
	if cluster.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		err = cluster.srv.Stop(ctx)
	}
	if cluster.stopWD != nil {
		cluster.stopWD()
	}
	if cluster.dir != "" && err == nil {
		if rmErr := os.RemoveAll(cluster.dir); rmErr != nil {
			err = rmErr
		}
	}
	return err
}

// NATS starts an embedded NATS server with JetStream for t, on a random
// port with its store in a temporary directory, and returns its URL. The
// server is shut down when t ends.
func NATS(t testing.TB) string {
	t.Helper()
	s, err := natsembed.Start(natsembed.Options{
		Dir:  t.TempDir(),
		Host: "127.0.0.1",
		Port: -1,
		// Info hides the server's startup banner, which it logs as debug.
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

// NATSServer starts a JetStream nats-server on loopback with opts, whose
// host, port (a free one unless opts names one), store (a new directory
// unless opts names one) and signal handling it fills in (the rest, such as
// users and their permissions, is the test's), and stops it when the test
// ends. opts stays the server's: a test may clone it to reload.
func NATSServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	port := opts.Port
	if port == 0 {
		// Not ":0": a test may restart the server on its port
		// (NATSServerRestarted), which one from the ephemeral range
		// could have lost meanwhile to any connection on the machine.
		port = FreePort(t)
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	if opts.JetStreamMaxMemory == 0 {
		// As serve's embedded server (natsembed). Left to nats-server, it
		// is the Go runtime's memory limit when one is set, and a command
		// that runs inside the test process (serve, api, worker: their
		// memory_limit_bytes and its follower) sets one for as long as it
		// runs: a server started meanwhile could not reserve ORDERLY_LIVE
		// ("insufficient memory resources available", once in CI).
		opts.JetStreamMaxMemory = 1 << 30
	}
	opts.Host, opts.Port, opts.JetStream, opts.NoSigs = "127.0.0.1", port, true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("testenv: nats-server not ready")
	}
	return ns
}

// NATSServerLost stops ns, a server from NATSServer, and starts another on
// its address with an empty store: nats-server back with its JetStream
// directory lost, or restored from before anything was in it, its clients
// reconnecting to the same URL.
func NATSServerLost(t testing.TB, ns *server.Server) *server.Server {
	t.Helper()
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	return NATSServer(t, &server.Options{Port: port})
}

// NATSServerRestarted stops ns, a server from NATSServer, and starts
// another on its address and its store: nats-server restarted, with what
// it kept on disk and without what it kept in memory, its clients
// reconnecting to the same URL. The new server has none of ns's other
// options (users and their permissions).
func NATSServerRestarted(t testing.TB, ns *server.Server) *server.Server {
	t.Helper()
	port := ns.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(ns.StoreDir()) // nats-server adds "jetstream"
	ns.Shutdown()
	ns.WaitForShutdown()
	return NATSServer(t, &server.Options{Port: port, StoreDir: dir})
}

// Context returns t's context with a deadline, so that a test stuck on a
// dependency fails with context.DeadlineExceeded instead of hanging until
// the test binary's timeout.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Logger returns a logger writing to t's output, so that logs show up next
// to the test that produced them (and only when it fails or with -v).
func Logger(t testing.TB) *slog.Logger {
	return LoggerTo(t.Output())
}

// LoggerTo is Logger writing to w (a LogBuffer the test reads, with the
// test's output).
func LoggerTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// VersionReader makes a login of the test's own (prefix and a unique
// suffix) on the database of dsn that may read the schema's version
// (goose_db_version) and nothing else, dropped with what it owns when the
// test ends, and returns dsn as that login.
func VersionReader(t testing.TB, dsn, prefix string) string {
	t.Helper()
	admin, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s_t%d", prefix, time.Now().UnixNano())
	for _, q := range []string{"CREATE ROLE " + name + " LOGIN", "GRANT USAGE ON SCHEMA public TO " + name,
		"GRANT SELECT ON goose_db_version TO " + name} {
		if _, err := admin.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{"DROP OWNED BY " + name, "DROP ROLE " + name} {
			if _, err := admin.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
		admin.Close(context.Background())
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	return u.String()
}
