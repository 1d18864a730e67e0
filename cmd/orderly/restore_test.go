package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUnpublishedOrderOfARestoredBackupRunsOnce: a PostgreSQL backup holds
// an order in unpublished (its publish failed; NATS was down); after the
// backup the reconciler published it and it ran. The database restored
// from that backup (pg_dump, pg_restore --clean, as docs/deploy.md says)
// holds it queued and unpublished again, and nothing in PostgreSQL tells
// it from an order whose publish failed: the reconciler published it once
// more after the restart (nats-server restarted too, so its duplicate
// window no longer knew the id) and it ran a second time. The API now
// finds PostgreSQL behind the mark it keeps in NATS and ends the order as
// canceled, saying why, instead of publishing it.
func TestUnpublishedOrderOfARestoredBackupRunsOnce(t *testing.T) {
	bin, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	port, store := ns.Addr().(*net.TCPAddr).Port, filepath.Dir(ns.StoreDir())
	dsn := testenv.Postgres(t)
	logger := testenv.Logger(t)
	ov := testOverrides(dsn, ns.ClientURL())
	w, err := config.NewWatcherFilled("", nil, ov, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, sum := auth.NewToken()
	marker := runsMarker(t)

	// up starts an API and the worker of h1, as `orderly api` and
	// `orderly worker` would; down stops them.
	var s *stack
	up := func() (down func()) {
		var downAPI func()
		s, downAPI = upAPI(t, w, logger, tok, sum)
		downWorker := upWorker(t, w, logger, "h1")
		return func() { downAPI(); downWorker() }
	}
	down := up()

	// NATS down: the order is recorded, its publish fails (503).
	ns.Shutdown()
	ns.WaitForShutdown()
	code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "sh",
		"args": []string{"-c", `echo x >> "$1"`, "_", marker}})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("submit with NATS down = %d, want 503: %s", code, body)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var id uuid.UUID
	err = conn.QueryRow(ctx, `SELECT id FROM unpublished`).Scan(&id)
	conn.Close(ctx)
	if err != nil {
		t.Fatalf("the order's unpublished mark: %v", err)
	}

	// The backup, taken now, holds it in unpublished.
	backup := pgDump(t, bin, dsn)

	// NATS back: the reconciler publishes it and it runs, once.
	ns = testenv.NATSServer(t, &server.Options{Port: port, StoreDir: store})
	s.waitFor(id, time.Minute, func(o api.Order) bool { return o.Status == "succeeded" })
	if n := runs(t, marker); n != 1 {
		t.Fatalf("ran %d times before the restore, want 1", n)
	}
	// Its message leaves the stream, as PurgeAcked removes acknowledged
	// orders. The API's purges the hosts it published to, and every
	// host only every 5 minutes: the order's message was sent when NATS
	// came back, by the publish the API had given up on, so here it is a
	// purge of another API process, whose first round reads every host.
	// Once the worker's ack, which follows the result, has moved the
	// consumer's ack floor to the message.
	st := waitH1Acked(t, ns.ClientURL(), "the order's message acknowledged")
	purger := testenv.Queue(t, ns.ClientURL(), "purger", queue.Options{})
	if n, err := purger.PurgeAcked(ctx); err != nil || n != 1 {
		t.Fatalf("purge of the acknowledged orders: %d %v, want h1's", n, err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, queue.OrdersSubject+"h1"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("h1's messages after the purge: %v, want none", err)
	}

	// The restore: everything stopped (nats-server too, as serve stops
	// its own), the backup restored, everything started again.
	down()
	ns = testenv.NATSServerRestarted(t, ns)
	pgRestore(t, bin, dsn, backup)
	up()

	o := s.waitFor(id, time.Minute, func(o api.Order) bool { return o.Status != "queued" && o.Status != "running" })
	if n := runs(t, marker); n != 1 {
		t.Fatalf("the order ran %d times: the reconciler published again an order the restored backup held as unpublished, which had run since", n)
	}
	if o.Status != "canceled" || o.Result == nil || o.Result.Error == nil || !strings.Contains(*o.Result.Error, "restored") {
		t.Fatalf("the order after the restore: %s %+v, want canceled saying PostgreSQL was restored", o.Status, o.Result)
	}
}

// runs counts the lines the order wrote to marker.
func runs(t *testing.T, marker string) int {
	t.Helper()
	b, err := os.ReadFile(marker)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "x\n")
}

// TestQueuedOrderOfARestoredBackupRunsOnce: a PostgreSQL backup holds an
// order queued, published (not in unpublished); after the backup it ran
// and its message was acknowledged. A limits orders stream keeps an
// acknowledged message until the API's next purge (5 s), and a
// nats-server restarted meanwhile has lost the host's consumer, whose
// state is in memory: the worker creates it again from the host's first
// message stored and gets the order once more. Restored, PostgreSQL holds
// it queued, never claimed, and the worker ran it a second time. Here
// nothing purges (the API is stopped while the order runs: PurgeAcked is
// the API's), so the message is there whatever the timing. The worker now
// keeps in NATS how far its host's orders were claimed, and ends a
// delivery below that whose order PostgreSQL holds as never claimed as
// canceled, saying PostgreSQL was restored, instead of claiming it.
func TestQueuedOrderOfARestoredBackupRunsOnce(t *testing.T) {
	bin, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	dsn := testenv.Postgres(t)
	logger := testenv.Logger(t)
	w, err := config.NewWatcherFilled("", nil, testOverrides(dsn, ns.ClientURL()), logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, sum := auth.NewToken()
	marker := runsMarker(t)

	var s *stack
	apiUp := func() (down func()) {
		s, down = upAPI(t, w, logger, tok, sum)
		return down
	}
	workerUp := func() (down func()) { return upWorker(t, w, logger, "h1") }
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// No worker yet: the order is accepted, published and stays queued.
	downAPI := apiUp()
	code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "sh",
		"args": []string{"-c", `echo x >> "$1"`, "_", marker}})
	if code != http.StatusAccepted {
		t.Fatalf("submit = %d, want 202: %s", code, body)
	}
	var o api.Order
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, time.Minute, "the order's publish mark cleared", func() bool {
		var n int
		return conn.QueryRow(ctx, `SELECT count(*) FROM unpublished`).Scan(&n) == nil && n == 0
	})

	// The backup, taken now, holds it queued.
	backup := pgDump(t, bin, dsn)

	// The API stops, so that nothing purges the stream; the worker runs
	// the order, once, and acknowledges its message.
	downAPI()
	downWorker := workerUp()
	testenv.WaitUntil(t, time.Minute, "the order succeeded", func() bool {
		var st string
		return conn.QueryRow(ctx, `SELECT status FROM orders WHERE id = $1`, o.ID).Scan(&st) == nil && st == "succeeded"
	})
	waitH1Acked(t, ns.ClientURL(), "the order's message acknowledged")
	downWorker()
	if n := runs(t, marker); n != 1 {
		t.Fatalf("ran %d times before the restore, want 1", n)
	}

	// The restore: nats-server restarted with its store (the consumer is
	// gone, the acknowledged message is not), the backup restored,
	// everything started again.
	ns = testenv.NATSServerRestarted(t, ns)
	if _, err := testenv.JetStream(t, ns.ClientURL(), "probe").Stream(ctx, queue.OrdersStream); err != nil {
		t.Fatal(err)
	}
	pgRestore(t, bin, dsn, backup)
	apiUp()
	workerUp()

	got := s.waitFor(o.ID, time.Minute, func(o api.Order) bool { return o.Status != "queued" && o.Status != "running" })
	if n := runs(t, marker); n != 1 {
		t.Fatalf("the order ran %d times: the restored backup held it queued, and its acknowledged message came back with the consumer a restarted nats-server lost", n)
	}
	if got.Status != "canceled" || got.Result == nil || got.Result.Error == nil || !strings.Contains(*got.Result.Error, "restored") {
		t.Fatalf("the order after the restore: %s %+v, want canceled saying PostgreSQL was restored", got.Status, got.Result)
	}
}

// runsMarker is the file an order's `echo x >> "$1"` appends to, in a
// directory every user may write to (runs counts its lines).
func runsMarker(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "ran")
}

// pgDump backs the database at dsn up with the PostgreSQL binaries in
// bin (pg_dump -Fc) and returns the backup's path.
func pgDump(t *testing.T, bin, dsn string) string {
	t.Helper()
	backup := filepath.Join(t.TempDir(), "orderly.dump")
	if out, err := exec.CommandContext(t.Context(), filepath.Join(bin, "pg_dump"), "-Fc", "-f", backup, "-d", dsn).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	return backup
}

// pgRestore restores backup into the database at dsn, as docs/deploy.md
// says (pg_restore --clean).
func pgRestore(t *testing.T, bin, dsn, backup string) {
	t.Helper()
	if out, err := exec.CommandContext(t.Context(), filepath.Join(bin, "pg_restore"), "--clean", "--if-exists", "-d", dsn, backup).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
}

// waitH1Acked waits until h1's consumer on the NATS server at url has
// settled the last message of h1 in the orders stream, and returns the
// stream.
func waitH1Acked(t *testing.T, url, what string) jetstream.Stream {
	t.Helper()
	ctx := t.Context()
	js := testenv.JetStream(t, url, "probe")
	st, err := js.Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, time.Minute, what, func() bool {
		c, err := js.Consumer(ctx, queue.OrdersStream, queue.ConsumerName("h1"))
		if err != nil {
			return false
		}
		last, err := st.GetLastMsgForSubject(ctx, queue.OrdersSubject+"h1")
		return err == nil && c.CachedInfo().AckFloor.Stream >= last.Sequence
	})
	return st
}

// upAPI starts an API on its own connections, as `orderly api` would,
// with the admin token tok (sum its hash); down stops it (once, and at
// the end of the test if not before).
func upAPI(t *testing.T, w *config.Watcher, logger *slog.Logger, tok, sum string) (s *stack, down func()) {
	t.Helper()
	ctx := t.Context()
	b, err := openBackend(ctx, w.Current(), "test", logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.EnsureAPIToken(ctx, postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	a, err := startAPI(ctx, w, b, logger)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{t: t, url: a.URL, token: tok}, stopOnce(t, func() { a.shutdown(); b.close() })
}

// upWorker starts the worker of host on its own connections, as `orderly
// worker` would; down stops it as upAPI's does.
func upWorker(t *testing.T, w *config.Watcher, logger *slog.Logger, host string) (down func()) {
	t.Helper()
	ctx := t.Context()
	b, err := openBackend(ctx, w.Current(), "test", logger)
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.Current()
	cfg.Host = host
	wr, err := startWorker(ctx, cfg, b, logger, w)
	if err != nil {
		t.Fatal(err)
	}
	return stopOnce(t, func() { _ = wr.stop(); b.close() })
}

// stopOnce registers stop as a cleanup of t and returns it, to be called
// earlier at most once.
func stopOnce(t *testing.T, stop func()) func() {
	var once sync.Once
	f := func() { once.Do(stop) }
	t.Cleanup(f)
	return f
}

// TestNewDatabaseUnderAnOldNATSIsNoRestore: orderly pointed at a new,
// empty database while NATS kept the store of the database before it
// (an operator starting afresh, or a database_url changed by mistake).
// The API reported it as PostgreSQL restored from a backup (ERROR, the
// restore counter, postgres_restored on /v1/status), with nothing to
// settle. It now says what it is, at WARN, and is no restore; the order
// of the database before, whose message waits in the stream, is dropped
// by the worker, never run.
func TestNewDatabaseUnderAnOldNATSIsNoRestore(t *testing.T) {
	ctx := t.Context()
	ns := testenv.NATSServer(t, &server.Options{})
	before, fresh := testenv.Postgres(t), testenv.Postgres(t)
	var logs testenv.LogBuffer
	logger := testenv.LoggerTo(&logs)
	watcher := func(dsn string) *config.Watcher {
		w, err := config.NewWatcherFilled("", nil, testOverrides(dsn, ns.ClientURL()), logger, nil)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	tok, sum := auth.NewToken()
	marker := runsMarker(t)

	// The database before: an order for h1, whose worker is not there,
	// published; its mark cleared, the generation raised in NATS.
	s, down := upAPI(t, watcher(before), logger, tok, sum)
	code, body := s.do("POST", "/v1/orders", map[string]any{"host": "h1", "command": "sh",
		"args": []string{"-c", `echo x >> "$1"`, "_", marker}})
	if code != http.StatusAccepted {
		t.Fatalf("submit = %d, want 202: %s", code, body)
	}
	var o api.Order
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatal(err)
	}
	probe := testenv.Queue(t, ns.ClientURL(), "probe", queue.Options{})
	var natsGen uint64
	testenv.WaitUntil(t, time.Minute, "the publish generation raised in NATS", func() bool {
		g, err := probe.PostgresMark(ctx)
		natsGen = g
		return err == nil && g > 0
	})
	down()

	// The new database, under the same NATS.
	w := watcher(fresh)
	s, _ = upAPI(t, w, logger, tok, sum)
	conn, err := pgx.Connect(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	testenv.WaitUntil(t, time.Minute, "the new database's generation raised past NATS's", func() bool {
		var g uint64
		return conn.QueryRow(ctx, `SELECT generation FROM restore_mark`).Scan(&g) == nil && g > natsGen
	})
	upWorker(t, w, logger, "h1")
	waitH1Acked(t, ns.ClientURL(), "the order's message settled by the worker")

	if n := runs(t, marker); n != 0 {
		t.Fatalf("the order of the database before ran %d times under the new one", n)
	}
	out := logs.String()
	if !strings.Contains(out, `level=ERROR msg="dropped a message whose order is not in the database"`) || !strings.Contains(out, o.ID.String()) {
		t.Fatalf("no ERROR naming the dropped order %s in:\n%s", o.ID, out)
	}
	if !strings.Contains(out, `level=WARN msg="PostgreSQL is new to this NATS`) || strings.Contains(out, "PostgreSQL is behind what NATS saw") {
		t.Fatalf("want the new database said as such, and no restore, in:\n%s", out)
	}
	code, body = s.do("GET", "/v1/status", nil)
	if code != http.StatusOK || strings.Contains(string(body), "postgres_restored") {
		t.Fatalf("status = %d %s, want no postgres_restored", code, body)
	}
}
