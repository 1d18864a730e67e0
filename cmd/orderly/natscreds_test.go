package main

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestNATSCredentialRefusalsSayWhatToChange: against serve's embedded
// NATS, a worker started with no credential, or with another host's (the
// README's `--nats-nkey data/nats-creds/worker-web-2.nk` given to a worker
// of web-3), was told "Authorization Violation", or that binding a bucket
// timed out; each now says which setting to change and where serve
// writes the right file, and neither is waited for.
func TestNATSCredentialRefusalsSayWhatToChange(t *testing.T) {
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	// The API creates the streams and buckets a worker binds to.
	api := config.Default()
	api.NATS.Nkey = creds.API
	opts, err := natsAuth(api, roleAPI)
	if err != nil {
		t.Fatal(err)
	}
	apiConn, err := queue.Connect(ns.ClientURL(), "api", opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer apiConn.Close()
	if _, err := openQueue(t.Context(), apiConn, api, roleAPI, nil); err != nil {
		t.Fatal(err)
	}

	worker := config.Default()
	worker.Host = "h2"
	opts, err = natsAuth(worker, roleWorker)
	if err != nil {
		t.Fatal(err)
	}
	_, err = queue.Connect(ns.ClientURL(), "worker", append(opts, nats.NoReconnect())...)
	err = natsConnectError(worker, roleWorker, err)
	if err == nil || !strings.Contains(err.Error(), "set nats.nkey") || !strings.Contains(err.Error(), "worker-h2.nk") {
		t.Errorf("a worker with no credential: %v", err)
	}
	if depNATS.retryable(err) {
		t.Errorf("a worker with no credential is waited for: %v", err)
	}

	worker.NATS.Nkey = creds.Workers["h1"] // h1's seed, for a worker of h2
	opts, err = natsAuth(worker, roleWorker)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := queue.Connect(ns.ClientURL(), "worker", opts...)
	if err != nil {
		t.Fatal(err) // the server knows the seed: it connects
	}
	defer nc.Close()
	_, err = openQueue(t.Context(), nc, worker, roleWorker, nil)
	if err == nil {
		t.Fatal("a worker of h2 bound the queue with h1's credential")
	}
	if !strings.Contains(err.Error(), "is not host h2's") || !strings.Contains(err.Error(), "nats-creds/worker-h2.nk") ||
		!strings.Contains(err.Error(), creds.Workers["h1"]) {
		t.Errorf("a worker of h2 with h1's credential: %v", err)
	}
	if depNATS.retryable(err) {
		t.Errorf("a worker with another host's credential is waited for: %v", err)
	}
}

// TestOpenBusIsNamed: a process whose NATS server asks for no credential
// says so at start (anyone reaching it can publish on orderly's
// subjects); against serve's embedded NATS, which requires one, it says
// nothing.
func TestOpenBusIsNamed(t *testing.T) {
	dsn := testenv.Postgres(t)
	const warning = "the NATS server requires no credential"

	cfg := config.Default()
	cfg.DatabaseURL = dsn
	// With a password in the URL, which a server without authentication
	// ignores: the warning names the URL without it.
	cfg.NATS.URL = strings.Replace(testenv.NATS(t), "nats://", "nats://api:Sec4etNATSpass@", 1)
	var logs testenv.LogBuffer
	b, err := openBackend(t.Context(), cfg, "open", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.close()
	if !strings.Contains(logs.String(), warning) {
		t.Errorf("against a NATS without authentication, no warning:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "Sec4etNATSpass") || !strings.Contains(logs.String(), "nats://api:***@") {
		t.Errorf("the warning shows nats.url's password:\n%s", logs.String())
	}

	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "h0", nil)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg.NATS.URL = ns.ClientURL()
	cfg.NATS.Nkey = creds.API
	var authLogs testenv.LogBuffer
	b, err = openBackend(t.Context(), cfg, "closed", slog.New(slog.NewTextHandler(&authLogs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.close()
	if strings.Contains(authLogs.String(), warning) {
		t.Errorf("against serve's NATS, which requires a credential:\n%s", authLogs.String())
	}
}

// TestMissingWorkerSeedSaysHowServeWritesIt: README's second worker
// (`--nats-nkey data/nats-creds/worker-web-2.nk`) started before serve
// listed web-2 in nats.workers stopped with only "open …: no such file or
// directory"; it now says how serve comes to write the file.
func TestMissingWorkerSeedSaysHowServeWritesIt(t *testing.T) {
	worker := config.Default()
	worker.Host = "web-2"
	worker.NATS.Nkey = filepath.Join(t.TempDir(), "nats-creds", natsembed.WorkerFile("web-2"))
	_, err := natsAuth(worker, roleWorker)
	if err == nil || !strings.Contains(err.Error(), "no such file") ||
		!strings.Contains(err.Error(), "--nats-workers web-2") || !strings.Contains(err.Error(), "nats.workers") {
		t.Fatalf("a worker of web-2 without its seed file: %v", err)
	}
	// Another file name (a seed of an external NATS) gets no serve hint.
	worker.NATS.Nkey = filepath.Join(t.TempDir(), "worker.nk")
	if _, err := natsAuth(worker, roleWorker); err == nil || strings.Contains(err.Error(), "nats-workers") {
		t.Fatalf("a missing seed not of serve's: %v", err)
	}
}
