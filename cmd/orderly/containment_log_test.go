package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerLogsItsContainment: the worker says at start whether orders
// get their own cgroups or only process groups, and why (docs/config.md):
// with worker.cgroup auto either, by what the machine allows; switched
// off, process groups, because it is off.
func TestWorkerLogsItsContainment(t *testing.T) {
	s := newStack(t)
	for _, c := range []struct {
		host, setting string
		off           bool
	}{{"cg-auto", "auto", false}, {"cg-off", "", true}} {
		cfg := s.watcher.Current()
		cfg.Host, cfg.Worker.Cgroup = c.host, c.setting
		var logs testenv.LogBuffer
		wr, err := startWorker(t.Context(), cfg, s.b, slog.New(slog.NewTextHandler(&logs, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = wr.stop()
		own := strings.Contains(logs.String(), `msg="orders run in their own cgroups"`)
		groups := strings.Contains(logs.String(), `msg="orders run in process groups only"`) &&
			strings.Contains(logs.String(), "reason=")
		if own == groups || c.off && !strings.Contains(logs.String(), `reason="worker.cgroup is off"`) {
			t.Errorf("worker.cgroup %q: own cgroups logged %v, process groups logged %v\n%s", c.setting, own, groups, logs.String())
		}
	}
}

// TestWorkerHeartbeatFitsTheLease: a worker whose nats.heartbeat is more
// than a third of the lease the API set (the hosts bucket's TTL, 2s here)
// refuses to start, whatever its own nats.lease_ttl says: a standby would
// take the host between its beats, or after one late renewal, and
// interrupt the order it runs. It
// refuses at once: waiting does not change the bucket.
func TestWorkerHeartbeatFitsTheLease(t *testing.T) {
	s := newStack(t)
	nc, err := queue.Connect(s.natsURL, "lease-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := s.watcher.Current()
	cfg.Host = "lease-test" // a worker's: the API's config names none
	cfg.NATS.LeaseTTL, cfg.NATS.Heartbeat, cfg.NATS.AckWait = time.Minute, 20*time.Second, 90*time.Second
	_, err = openQueue(t.Context(), nc, cfg, roleWorker, nil)
	if err == nil || !strings.Contains(err.Error(), "must be at most a third of the host lease, 2s") {
		t.Fatalf("a 20s heartbeat against a 2s bucket TTL: %v", err)
	}
	// Refused, not waited for: it logged "waiting for nats" for good.
	if depNATS.retryable(queueStartError(nc, cfg, err)) {
		t.Fatalf("a 20s heartbeat against a 2s bucket TTL is waited for: %v", err)
	}
	// Shorter than the lease, but one late renewal would lose the host.
	cfg.NATS.Heartbeat = time.Second
	if _, err = openQueue(t.Context(), nc, cfg, roleWorker, nil); err == nil || !strings.Contains(err.Error(), "must be at most a third of the host lease, 2s") {
		t.Fatalf("a 1s heartbeat against a 2s bucket TTL: %v", err)
	}
	cfg.NATS.Heartbeat = 600 * time.Millisecond
	if _, err := openQueue(t.Context(), nc, cfg, roleWorker, nil); err != nil {
		t.Fatalf("a 600ms heartbeat: %v", err)
	}
}

// TestWorkerRefusesAHostItsLoginIsNotFor: a database login listed in
// worker_logins (docs/sql.md) for other hosts cannot start a worker of
// this one: row security would hide every order of it. The error names
// the hosts it may work for.
func TestWorkerRefusesAHostItsLoginIsNotFor(t *testing.T) {
	s := newStack(t)
	pool, err := postgres.Open(t.Context(), s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(t.Context(), `INSERT INTO worker_logins (login, host) VALUES (current_user, 'listed')`); err != nil {
		t.Fatal(err)
	}
	cfg := s.watcher.Current()
	cfg.Host = "elsewhere"
	if wr, err := startWorker(t.Context(), cfg, s.b, testenv.Logger(t), nil); err == nil {
		_ = wr.stop()
		t.Fatal("a worker started for a host its login is not listed for")
	} else if !strings.Contains(err.Error(), "may work for hosts listed only") {
		t.Fatalf("the refusal: %v", err)
	}
	cfg.Host = "listed"
	wr, err := startWorker(t.Context(), cfg, s.b, testenv.Logger(t), nil)
	if err != nil {
		t.Fatalf("a worker of its listed host: %v", err)
	}
	_ = wr.stop()
}

// TestWorkerLogsUntrustedCommandPath: a command_path directory that others
// could write into is named at the worker's start, with why; its commands
// are refused (worker/hostpolicy, TestUntrustedCommandPath).
func TestWorkerLogsUntrustedCommandPath(t *testing.T) {
	s := newStack(t)
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := s.watcher.Current()
	cfg.Host = "cp-open"
	cfg.Worker.CommandPath = append([]string{open}, cfg.Worker.CommandPath...)
	// A script interpreter there is named too.
	python := filepath.Join(open, "python3")
	if err := os.WriteFile(python, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Runbooks.Interpreters = append(slices.Clone(cfg.Runbooks.Interpreters), python)
	var logs testenv.LogBuffer
	wr, err := startWorker(t.Context(), cfg, s.b, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = wr.stop()
	if !strings.Contains(logs.String(), `msg="commands in this command_path directory are refused"`) ||
		!strings.Contains(logs.String(), open+" is writable by its group or by others") {
		t.Errorf("no warning naming %s:\n%s", open, logs.String())
	}
	if !strings.Contains(logs.String(), `msg="scripts run with this interpreter are refused"`) ||
		!strings.Contains(logs.String(), python+": "+open+" is writable") {
		t.Errorf("no warning naming the interpreter %s:\n%s", python, logs.String())
	}
}

// TestWorkerStartWaitsOutADroppedConnection: a worker whose PostgreSQL
// restarted between its backend's connect and its login check stopped
// ("orderly stopped … check login: unexpected EOF", seen in
// TestFaultsRunbookDependencyRestart/postgres: the runbook's child host
// then had no worker), where the connect itself waits for PostgreSQL.
// The check is waited out as the connect is: its one connection dropped
// under it (a pool of one, just used, so it is not pinged before the
// check), the worker starts on a new one.
func TestWorkerStartWaitsOutADroppedConnection(t *testing.T) {
	s := newStack(t)
	dsn, cut := startPGProxy(t, s.dsn)
	cfg := s.watcher.Current()
	cfg.DatabaseURL, cfg.Host = dsn+"&pool_max_conns=1", "login-cut"
	var logs testenv.LogBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	b := backendCut(t, cfg, "login-cut", logger, cut)
	wr, err := startWorker(t.Context(), cfg, b, logger, nil)
	if err != nil {
		t.Fatalf("the worker's start ended on a connection PostgreSQL dropped: %v\n%s", err, logs.String())
	}
	_ = wr.stop()
	if !strings.Contains(logs.String(), `msg="waiting for postgresql"`) {
		t.Errorf("the start did not say it waited for PostgreSQL:\n%s", logs.String())
	}
}

// TestAPIStartWaitsOutADroppedConnection: the API's start read the
// runtime tokens (api_tokens) once, right after its backend connected:
// a PostgreSQL restart between the two ended `orderly api`'s start
// ("list api tokens: unexpected EOF"), where the connect itself waits,
// as the worker's login check did. The read is waited out as the
// connect is: its one connection dropped under it, the API starts on a
// new one. A login that may not read api_tokens still ends the start at
// once, with PostgreSQL's refusal.
func TestAPIStartWaitsOutADroppedConnection(t *testing.T) {
	s := newStack(t)
	dsn, cut := startPGProxy(t, s.dsn)
	var logs testenv.LogBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	w, err := config.NewWatcher("", nil, testOverrides(dsn+"&pool_max_conns=1", s.natsURL), logger)
	if err != nil {
		t.Fatal(err)
	}
	b := backendCut(t, w.Current(), "tokens-cut", logger, cut)
	ar, err := startAPI(t.Context(), w, b, logger)
	if err != nil {
		t.Fatalf("the API's start ended on a connection PostgreSQL dropped: %v\n%s", err, logs.String())
	}
	ar.shutdown()
	if !strings.Contains(logs.String(), `msg="waiting for postgresql"`) {
		t.Errorf("the start did not say it waited for PostgreSQL:\n%s", logs.String())
	}

	// A login that reads the schema's version but not api_tokens.
	reader := testenv.VersionReader(t, s.dsn, "orderly_notokens")
	var denied testenv.LogBuffer
	logger = slog.New(slog.NewTextHandler(&denied, nil))
	w, err = config.NewWatcher("", nil, testOverrides(reader, s.natsURL), logger)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := openBackend(t.Context(), w.Current(), "tokens-denied", logger)
	if err != nil {
		t.Fatal(err)
	}
	defer nb.close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if ar, err := startAPI(ctx, w, nb, logger); err == nil {
		ar.shutdown()
		t.Fatal("an API started on a login that may not read api_tokens")
	} else if !strings.Contains(err.Error(), "permission denied") || ctx.Err() != nil {
		t.Fatalf("the refusal was not told at once: %v", err)
	}
	if strings.Contains(denied.String(), "waiting for postgresql") {
		t.Errorf("a refused read was waited for:\n%s", denied.String())
	}
}

// TestServeStartWaitsOutADroppedConnection: serve reaches its PostgreSQL
// first with its migration; the steps after it (the backend's connect,
// the admin token, the previous serve's presence) each ran once, so a
// restart of PostgreSQL then (a managed one's supervisor starts it again
// within seconds) ended the start, where api's and worker's wait. They
// wait now: the backend's one connection is terminated as a restart
// terminates it, just after its last use (so the pool does not ping it
// first), and serve starts on a new one.
func TestServeStartWaitsOutADroppedConnection(t *testing.T) {
	dataDir := serveDataDir(t, "serve-pgcut-")
	// The token file serve would write: the admin token's statement is
	// then the first after the backend opened, with no file synced first.
	tok, _ := auth.NewToken()
	if err := writeTokenFile(filepath.Join(dataDir, "admin.token"), tok); err != nil {
		t.Fatal(err)
	}
	var terminated atomic.Int64
	hookErr := make(chan error, 1)
	serveBackendOpened = func(b *backend) {
		ctx := context.Background()
		admin, err := pgx.Connect(ctx, b.pool.Config().ConnString())
		if err != nil {
			hookErr <- err
			return
		}
		defer admin.Close(ctx)
		if err := b.pool.Ping(ctx); err != nil {
			hookErr <- err
			return
		}
		var n int64
		err = admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()`).Scan(&n)
		terminated.Store(n)
		hookErr <- err
	}
	defer func() { serveBackendOpened = nil }()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testenv.LogBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"orderly", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv"},
			[]string{"ORDERLY_NATS__LISTEN=127.0.0.1:0"}, strings.NewReader(""), &out, &out)
	}()
	waitUntil(t, 3*time.Minute, "serve running", func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve's start ended: %v\n%s", err, out.String())
		default:
		}
		return strings.Contains(out.String(), " is running\n")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, out.String())
	}
	if err := <-hookErr; err != nil || terminated.Load() == 0 {
		t.Fatalf("the backend's connection terminated: %d, %v", terminated.Load(), err)
	}
	if !strings.Contains(out.String(), "waiting for postgresql") {
		t.Errorf("the start did not say it waited for PostgreSQL:\n%s", out.String())
	}
}

// backendCut opens a backend on cfg, whose DSN goes through a proxy with
// one pooled connection (startPGProxy, pool_max_conns=1), connects it,
// and has the proxy drop that connection (cut): what a PostgreSQL
// restart right after a start's connect leaves. The test's cleanup
// closes it.
func backendCut(t *testing.T, cfg config.Config, name string, logger *slog.Logger, cut func() int) *backend {
	t.Helper()
	b, err := openBackend(t.Context(), cfg, name, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	if err := b.pool.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := cut(); n != 1 {
		t.Fatalf("the proxy dropped %d connections, want the pool's one", n)
	}
	return b
}

// TestServeStartWaitsOutAnExternalNATSRestart: serve with an external
// NATS (nats.url set) tried every NATS step of its start once, so a
// server that restarted between serve's connect and its streams'
// creation (a rolling restart, a systemd restart of its unit) ended the
// start with the stream request's timeout, where api and worker, which
// run the same steps, wait it out. The server is stopped just after the
// backend's connect and started again once serve says it waits (without
// the change, serve's start ended instead).
func TestServeStartWaitsOutAnExternalNATSRestart(t *testing.T) {
	// serve in this process, on a PostgreSQL it does not manage, makes
	// the process its orders' subreaper (startAdoptingWorker), and left
	// it one for the rest of the test binary: every orphan of every
	// process it started later was handed to it and never reaped, a
	// killed postmaster of a later test's serve among them, whose pid
	// its zombie then held (every start of that cluster refused: lock
	// file already exists). Its worker's stop clears it now. Registered
	// first, so it runs once serve has stopped.
	leavesNoSubreaper(t)
	dataDir := serveDataDir(t, "serve-natscut-")
	ns := testenv.NATSServer(t, &server.Options{})
	natsURL, port, storeDir := ns.ClientURL(), ns.Addr().(*net.TCPAddr).Port, filepath.Dir(ns.StoreDir())
	stopped := make(chan struct{})
	var once sync.Once
	backendNATSConnected = func(*nats.Conn) {
		once.Do(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			close(stopped)
		})
	}
	defer func() { backendNATSConnected = nil }()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testenv.LogBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"orderly", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv",
			"--database-url", testenv.Postgres(t), "--nats-url", natsURL}, nil, strings.NewReader(""), &out, &out)
	}()
	ended := func() {
		select {
		case err := <-done:
			t.Fatalf("serve's start ended: %v\n%s", err, out.String())
		default:
		}
	}
	waitUntil(t, 3*time.Minute, "serve waiting for NATS", func() bool {
		ended()
		return strings.Contains(out.String(), "waiting for nats")
	})
	<-stopped
	testenv.NATSServer(t, &server.Options{Port: port, StoreDir: storeDir}) // restarted
	waitUntil(t, 3*time.Minute, "serve running", func() bool {
		ended()
		return strings.Contains(out.String(), " is running\n")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, out.String())
	}
}
