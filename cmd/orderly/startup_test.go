package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStartupWaitsForDependencies starts `orderly api` and `orderly
// worker` as a fleet booting together would: with one dependency not up
// yet. Both must keep running and say what they wait for, then serve once
// it comes up: the API answers /readyz and takes an order, the worker
// runs it.
func TestStartupWaitsForDependencies(t *testing.T) {
	for _, dep := range []dependency{depNATS, depPostgres} {
		t.Run(string(dep), func(t *testing.T) {
			dir := startupDir(t, "ost-")
			pg := startFaultPG(t, dir)
			token := startupAdminToken(t, pg.dsn())
			ns := newNATSServer(t, dir, "")
			startDep := ns.start
			if dep == depPostgres {
				ns.start()
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				if err := pg.srv.Stop(ctx); err != nil {
					t.Fatal(err)
				}
				startDep = func() { pg.restart() }
			}
			conf := writeStartupConfig(t, dir, pg.dsn(), ns.url())
			apiProc, workerProc, listen := startAPIAndWorker(t, dir, conf)

			want := "waiting for " + string(dep)
			for _, p := range []*faultProc{apiProc, workerProc} {
				waitLogLine(t, p, want, 30*time.Second)
			}
			// A few more attempts, each with its warn line, and still running.
			waitUntil(t, 30*time.Second, "a third attempt of the worker", func() bool {
				return strings.Contains(readLog(workerProc), "attempt=3")
			})
			for _, p := range []*faultProc{apiProc, workerProc} {
				if !p.alive() {
					t.Fatalf("%s exited while waiting for %s:\n%s", p.name, dep, logTail(p.log, 20))
				}
			}

			startDep()
			waitServing(t, listen, token, apiProc, workerProc, time.Minute)
		})
	}
}

// TestStartupRefusalsExit checks that waiting does not hide a mistake
// the operator must fix: a NATS password the server refuses, nats.replicas
// above one on a server in no cluster, a database whose schema is older
// than the binary. `orderly api` and `orderly worker` exit at once, non-zero, with
// the reason, and without a waiting line.
func TestStartupRefusalsExit(t *testing.T) {
	cases := []struct {
		name      string
		natsConf  string // appended to the server's configuration
		natsUser  string // user:password@ in the URL
		confEdit  func(string) string
		unmigrate bool
		// natsTLS turns TLS on for clients with a self-signed
		// certificate, which the client has no CA for.
		natsTLS bool
		// natsCert turns TLS on for clients with a certificate of a CA
		// the processes are given (SSL_CERT_FILE) that fails for
		// another cause: certCases' name.
		natsCert string
		scheme   string // of nats.url; nats:// when empty
		want     string
		unwanted string // a hint for another cause
	}{
		{name: "wrong nats password", natsConf: "authorization {\n  user: orderly\n  password: right\n}\n",
			natsUser: "orderly:wrong@", want: "authorization violation"},
		{name: "replicas above the cluster", want: "nats.replicas is 3",
			confEdit: func(c string) string { return strings.Replace(c, "nats:\n", "nats:\n  replicas: 3\n", 1) }},
		{name: "schema not up to date", unmigrate: true, want: "migrate up"},
		{name: "nats certificate of an unknown CA", natsTLS: true, want: "certificate is not trusted: give orderly the CA"},
		{name: "nats certificate expired", natsCert: "expired", want: "the NATS server's certificate expired at", unwanted: "is not trusted"},
		{name: "nats certificate of another host", natsCert: "another host's", want: "does not name 127.0.0.1, the host in nats.url",
			unwanted: "is not trusted"},
		// A tls:// URL to a server without TLS was waited for, "secure
		// connection not available" every 5 s, without end.
		{name: "tls url to a server without tls", scheme: "tls://", want: "nats.url asks for TLS, tls://, and the server offers none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			if tc.unmigrate {
				_, pool := testenv.Store(t, dsn)
				if _, err := pool.Exec(t.Context(), "DELETE FROM goose_db_version WHERE version_id = (SELECT max(version_id) FROM goose_db_version)"); err != nil {
					t.Fatal(err)
				}
			}
			dir := startupDir(t, "osc-")
			natsConf := tc.natsConf
			if tc.natsTLS {
				crt, key := filepath.Join(dir, "nats.crt"), filepath.Join(dir, "nats.key")
				writeSelfSigned(t, crt, key)
				natsConf = fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n}\n", crt, key)
			}
			env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
			if tc.natsCert != "" {
				ca := newTestCA(t, dir, "walk-ca")
				for _, c := range certCases() {
					if c.name == tc.natsCert {
						crt, key := ca.leaf(t, dir, "nats", c.names, c.from, c.until)
						natsConf = fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n}\n", crt, key)
					}
				}
				env = append(env, "SSL_CERT_FILE="+ca.path)
			}
			ns := newNATSServer(t, dir, natsConf)
			ns.start()
			scheme := "nats://"
			if tc.scheme != "" {
				scheme = tc.scheme
			}
			conf := writeStartupConfig(t, dir, dsn, scheme+tc.natsUser+"127.0.0.1:"+strconv.Itoa(ns.port))
			if tc.confEdit != nil {
				b, _ := os.ReadFile(conf)
				if err := os.WriteFile(conf, []byte(tc.confEdit(string(b))), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, args := range [][]string{
				{"api", "--config", conf, "--listen", "127.0.0.1:" + strconv.Itoa(freePort(t))},
				{"worker", "--config", conf, "--host", "h1"},
			} {
				p := startFaultProc(t, args[0], filepath.Join(dir, args[0]+".log"), env, orderlyBin, args...)
				if !p.waitExit(15 * time.Second) {
					t.Fatalf("%s still runs after 15 s:\n%s", args[0], logTail(p.log, 20))
				}
				if code := p.cmd.ProcessState.ExitCode(); code == 0 {
					t.Errorf("%s exited 0", args[0])
				}
				out := readLog(p)
				if !strings.Contains(strings.ToLower(out), strings.ToLower(tc.want)) {
					t.Errorf("%s: the log does not say %q:\n%s", args[0], tc.want, out)
				}
				if tc.unwanted != "" && strings.Contains(out, tc.unwanted) {
					t.Errorf("%s: the log says %q, the hint for another cause:\n%s", args[0], tc.unwanted, out)
				}
				if strings.Contains(out, "waiting for") {
					t.Errorf("%s waited for something waiting cannot fix:\n%s", args[0], out)
				}
			}
		})
	}
}

// TestStartupWaitEndsOnSignal checks that a worker waiting for
// PostgreSQL survives a SIGHUP (a reload asked for during the start), stops
// at once on SIGTERM, exiting 0, and that under systemd it tells the
// manager what it waits for and asks for more time to start.
func TestStartupWaitEndsOnSignal(t *testing.T) {
	dir := startupDir(t, "oss-")
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Nothing listens on port 1 of the loopback: refused at once.
	conf := writeStartupConfig(t, dir, "postgres://orderly@127.0.0.1:1/orderly", "nats://127.0.0.1:1")
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "NOTIFY_SOCKET=" + sock}
	p := startFaultProc(t, "worker", filepath.Join(dir, "worker.log"), env, orderlyBin,
		"worker", "--config", conf, "--host", "h1")

	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// NATS refuses too, and is waited for beside PostgreSQL: its
	// messages may come first.
	buf := make([]byte, 4096)
	var msg string
	for !strings.Contains(msg, "STATUS=waiting for postgresql: ") {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no sd_notify message saying the worker waits for postgresql: %v (last %q)\n%s", err, msg, logTail(p.log, 20))
		}
		msg = string(buf[:n])
		if strings.Contains(msg, "READY=1") {
			t.Errorf("the worker said READY while waiting: %q", msg)
		}
	}
	if !strings.Contains(msg, "EXTEND_TIMEOUT_USEC=") {
		t.Errorf("sd_notify message = %q, want STATUS=waiting for postgresql and EXTEND_TIMEOUT_USEC", msg)
	}
	waitLogLine(t, p, "waiting for postgresql", 10*time.Second)

	// A reload asked for while it waits (systemd's ExecReload) must not
	// end it: SIGHUP's default action would.
	before := strings.Count(readLog(p), "waiting for postgresql")
	p.signal(syscall.SIGHUP)
	waitUntil(t, 30*time.Second, "another attempt after SIGHUP", func() bool {
		if !p.alive() {
			t.Fatalf("the waiting worker died of SIGHUP:\n%s", logTail(p.log, 20))
		}
		return strings.Count(readLog(p), "waiting for postgresql") > before
	})

	sent := time.Now()
	p.signal(syscall.SIGTERM)
	if !p.waitExit(5 * time.Second) {
		t.Fatalf("the waiting worker did not stop within 5 s of SIGTERM:\n%s", logTail(p.log, 20))
	}
	t.Logf("stopped %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM while waiting = %d, want 0:\n%s", code, logTail(p.log, 20))
	}
}

// startupDir is a short directory for one test.
func startupDir(t *testing.T, prefix string) string { return shortDir(t, prefix, false) }

// shortDir is a directory for one test, short and outside t.TempDir: the
// PostgreSQL and sd_notify socket paths in it must stay under 108 bytes,
// and postgres must be able to enter it. It is removed afterwards, unless
// the test failed and keep is set (for inspection).
func shortDir(t *testing.T, prefix string, keep bool) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if keep && t.Failed() {
			t.Logf("kept %s for inspection", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// startAPIAndWorker starts `orderly api` (on a free port, returned) and
// `orderly worker` for host h1 on conf, logging into dir.
func startAPIAndWorker(t *testing.T, dir, conf string) (api, worker *faultProc, listen string) {
	t.Helper()
	return startAPIAndWorkerSeeds(t, dir, conf, nil)
}

// startAPIAndWorkerSeeds is startAPIAndWorker with each process on its
// role's seed of creds (the API's, h1's worker's) when not nil.
func startAPIAndWorkerSeeds(t *testing.T, dir, conf string, creds *natsembed.Credentials) (api, worker *faultProc, listen string) {
	t.Helper()
	listen = "127.0.0.1:" + strconv.Itoa(freePort(t))
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	apiArgs := []string{"api", "--config", conf, "--listen", listen}
	workerArgs := []string{"worker", "--config", conf, "--host", "h1"}
	if creds != nil {
		apiArgs = append(apiArgs, "--nats-nkey", creds.API)
		workerArgs = append(workerArgs, "--nats-nkey", creds.Workers["h1"])
	}
	api = startFaultProc(t, "api", filepath.Join(dir, "api.log"), env, orderlyBin, apiArgs...)
	worker = startFaultProc(t, "worker", filepath.Join(dir, "worker.log"), env, orderlyBin, workerArgs...)
	return api, worker, listen
}

// waitServing waits up to ready for the API of startAPIAndWorker to be
// ready, then for its worker, and runs one order of host h1 through them.
func waitServing(t *testing.T, listen, token string, api, worker *faultProc, ready time.Duration) {
	t.Helper()
	apiURL := "http://" + listen
	waitHTTPOK(t, apiURL+"/readyz", ready, api)
	waitLogLine(t, worker, "worker consuming", time.Minute)
	id := submitStartupOrder(t, apiURL, token, "h1")
	waitUntil(t, time.Minute, "the order succeeds", func() bool {
		return startupOrderStatus(t, apiURL, token, id) == "succeeded"
	})
}

// restart starts the stopped cluster again with the settings of
// startFaultPG; the cleanup startFaultPG registered stops the new server.
func (p *faultPG) restart() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), 2*time.Minute)
	defer cancel()
	srv, err := pgembed.Start(ctx, pgembed.Options{Dir: p.dir, BinDir: p.binDir, Database: "orderly", Fsync: false})
	if err != nil {
		p.t.Fatal(err)
	}
	p.srv = srv
}

// writeStartupConfig writes the fault tests' configuration for dsn and
// natsURL into dir and returns its path.
func writeStartupConfig(t *testing.T, dir, dsn, natsURL string) string {
	t.Helper()
	path := filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(faultConfig, dsn, natsURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startupAdminToken stores a new admin token in the database at dsn.
func startupAdminToken(t *testing.T, dsn string) string {
	t.Helper()
	pool, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tok, sum := auth.NewToken()
	if _, err := postgres.New(pool).EnsureAPIToken(t.Context(), postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitLogLine waits until p's log holds want, failing early if p exits.
func waitLogLine(t *testing.T, p *faultProc, want string, d time.Duration) {
	t.Helper()
	waitUntil(t, d, p.name+" logs "+strconv.Quote(want), func() bool {
		if strings.Contains(readLog(p), want) {
			return true
		}
		if !p.alive() {
			t.Fatalf("%s exited before logging %q:\n%s", p.name, want, logTail(p.log, 20))
		}
		return false
	})
}

func readLog(p *faultProc) string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// submitStartupOrder submits `true` for host and returns the order id.
func submitStartupOrder(t *testing.T, apiURL, token, host string) string {
	t.Helper()
	return submitCommand(t, apiURL, token, host, "true")
}

// submitCommand submits an order of command with args on host through
// the API at apiURL and returns its id.
func submitCommand(t *testing.T, apiURL, token, host, command string, args ...string) string {
	t.Helper()
	req := map[string]any{"host": host, "command": command}
	if len(args) > 0 {
		req["args"] = args
	}
	body, _ := json.Marshal(req)
	code, b := startupRequest(t, "POST", apiURL+"/v1/orders", token, body)
	if code != http.StatusAccepted {
		t.Fatalf("submit: status %d, want 202: %s", code, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	return o.ID.String()
}

func startupOrderStatus(t *testing.T, apiURL, token, id string) string {
	t.Helper()
	code, b := startupRequest(t, "GET", apiURL+"/v1/orders/"+id, token, nil)
	if code != http.StatusOK {
		t.Fatalf("get order %s: status %d: %s", id, code, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	return string(o.Status)
}

func startupRequest(t *testing.T, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestStartupWaitsForNATSCluster boots a fresh three-node JetStream
// cluster one node at a time after `orderly api` and `orderly worker`
// (nats.replicas: 3) have started: they wait through no server, a node
// without quorum, and the election, then serve. The cluster runs
// orderly's accounts, each process on its role's seed.
func TestStartupWaitsForNATSCluster(t *testing.T) {
	dsn := testenv.Postgres(t)
	token := startupAdminToken(t, dsn)
	dir := startupDir(t, "osn-")
	c := startNATSClusterAccounts(t, dir, 3, []string{"h1"})
	// The nodes' configuration is what the test needs; their state is not:
	// a fresh cluster has to elect its meta leader from scratch.
	for _, n := range c.nodes {
		n.kill9()
	}
	for _, name := range c.names {
		if err := os.RemoveAll(filepath.Join(dir, "js-"+name)); err != nil {
			t.Fatal(err)
		}
	}
	conf := writeStartupConfig(t, dir, dsn, c.url())
	b, _ := os.ReadFile(conf)
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "nats:\n", "nats:\n  replicas: 3\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	apiProc, workerProc, listen := startAPIAndWorkerSeeds(t, dir, conf, c.creds)
	for _, p := range []*faultProc{apiProc, workerProc} {
		waitLogLine(t, p, "waiting for nats", 30*time.Second)
	}
	for i, n := range c.nodes {
		before := strings.Count(readLog(apiProc), "waiting for nats")
		n.proc = startFaultProc(t, "nats-server", n.logPath, []string{"PATH=/usr/bin:/bin"}, n.bin, "-c", n.conf)
		if i == len(c.nodes)-1 {
			break
		}
		// Let the API try against the cluster as it is now: once with one
		// node (requests time out), three times with two (a fresh cluster
		// answers "JetStream system temporarily unavailable" until its
		// third node joins).
		tries := 1 + 2*i
		waitUntil(t, time.Minute, "the api tries again", func() bool {
			if !apiProc.alive() {
				t.Fatalf("api exited while the cluster formed:\n%s", logTail(apiProc.log, 20))
			}
			return strings.Count(readLog(apiProc), "waiting for nats") >= before+tries
		})
	}
	waitServing(t, listen, token, apiProc, workerProc, 2*time.Minute)
	t.Logf("the api's start:\n%s", logTail(apiProc.log, 20))
}

// TestStartupWaitsForRateBucket checks that the API's last piece of
// JetStream state, the shared rate-limit bucket, is created inside the
// start's wait like the streams: a JetStream that refuses it for a while
// (here a stream already holding its subjects; in CI, a cluster whose meta
// leader stepped down just after the streams were made) is waited out,
// not fatal.
func TestStartupWaitsForRateBucket(t *testing.T) {
	dsn := testenv.Postgres(t)
	token := startupAdminToken(t, dsn)
	dir := startupDir(t, "osr-")
	ns := newNATSServer(t, dir, "")
	ns.start()
	js := testenv.JetStream(t, ns.url(), "blocker")
	block := jetstream.StreamConfig{Name: "BLOCK", Subjects: []string{"$KV." + queue.RateBucket + ".>"}, Storage: jetstream.MemoryStorage}
	if _, err := js.CreateStream(t.Context(), block); err != nil {
		t.Fatal(err)
	}
	conf := writeStartupConfig(t, dir, dsn, ns.url())
	apiProc, workerProc, listen := startAPIAndWorker(t, dir, conf)
	waitUntil(t, time.Minute, "two attempts at the bucket", func() bool {
		if !apiProc.alive() {
			t.Fatalf("api exited while it could not create its bucket:\n%s", logTail(apiProc.log, 20))
		}
		return strings.Count(readLog(apiProc), queue.RateBucket) >= 2
	})
	if err := js.DeleteStream(t.Context(), block.Name); err != nil {
		t.Fatal(err)
	}
	waitServing(t, listen, token, apiProc, workerProc, time.Minute)
}

// TestReplicasRefused pins which placement errors end a start with
// nats.replicas above one: a cluster too small for the copies does; a
// server of the cluster not heard from yet does not.
func TestReplicasRefused(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 500, ErrorCode: 10023, Description: "insufficient resources"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{fmt.Errorf("create kv bucket orderly_ratelimit: %w",
			&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}), false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, false},
		{nats.ErrTimeout, false},
	}
	for _, tc := range cases {
		if got := replicasRefused(tc.err); got != tc.want {
			t.Errorf("replicasRefused(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestStartupRetryable pins which errors a start waits out, including
// the PostgreSQL refusals the process tests cannot provoke (the test
// cluster trusts local connections, so no password is ever wrong).
func TestStartupRetryable(t *testing.T) {
	refused, err := postgres.Open(t.Context(), "postgres://orderly@127.0.0.1:1/orderly?connect_timeout=5")
	if err == nil {
		refused.Close()
		t.Fatal("connected to port 1")
	}
	cases := []struct {
		name string
		dep  dependency
		err  error
		want bool
	}{
		{"postgresql refused the connection", depPostgres, err, true},
		{"postgresql starting up", depPostgres, &order.Error{Code: order.CodeUnavailable, Err: &pgconn.PgError{Code: "57P03"}}, true},
		{"attempt timed out", depPostgres, fmt.Errorf("connect to postgresql: %w", context.DeadlineExceeded), true},
		{"wrong password", depPostgres, fmt.Errorf("connect to postgresql: %w", &pgconn.PgError{Code: "28P01"}), false},
		{"no pg_hba entry", depPostgres, fmt.Errorf("connect to postgresql: %w", &pgconn.PgError{Code: "28000"}), false},
		{"no such database", depPostgres, fmt.Errorf("connect to postgresql: %w", &pgconn.PgError{Code: "3D000"}), false},
		{"schema too old", depPostgres, errors.New("the database has no (or an old) orderly schema"), false},
		{"no nats server", depNATS, fmt.Errorf("connect to nats: %w", nats.ErrNoServers), true},
		{"cluster electing", depNATS, &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"streams not created yet", depNATS, queue.ErrNotProvisioned, true},
		{"nats authorization violation", depNATS, fmt.Errorf("connect to nats: %w", nats.ErrAuthorization), false},
		{"nats credentials revoked", depNATS, nats.ErrAuthRevoked, false},
		{"credentials file missing", depNATS, &fs.PathError{Op: "open", Path: "/x.creds", Err: fs.ErrNotExist}, false},
		{"marked fatal", depNATS, fatalStartError{errors.New("nats.replicas is 3")}, false},
		// What nats.go returns when the client's first write after the
		// handshake fails before it reads that alert (a broken pipe): it
		// was waited out, ~18 s for the API, until an attempt read the
		// alert (TestNATSClientCertificate runs the server).
		{"nats closed after the tls handshake", depNATS, natsConnectError(config.Config{}, roleAPI,
			fmt.Errorf("connect to nats: %w", fmt.Errorf("%w: connection closed by remote after TLS handshake: %w", nats.ErrTLS,
				&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}))), false},
		// What crypto/tls returns when the server's tls block verifies
		// client certificates (TLS 1.3; TestStartupRefusalsExit runs the
		// server whose certificate is not trusted).
		{"nats asks for a client certificate", depNATS, natsConnectError(config.Config{}, roleAPI,
			fmt.Errorf("connect to nats: %w", &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")})), false},
	}
	for _, tc := range cases {
		if got := tc.dep.retryable(tc.err); got != tc.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
	// A worker of a cluster whose seed the servers refuse (a rotation
	// half done) was told only of serve's nats.workers.
	refusedSeed := natsConnectError(config.Config{NATS: config.NATS{Nkey: "/etc/orderly/worker.nk"}}, roleWorker, nats.ErrAuthorization).Error()
	if !strings.Contains(refusedSeed, "/etc/orderly/worker.nk") || !strings.Contains(refusedSeed, "auth.conf lists") {
		t.Errorf("a refused seed does not say where a cluster lists it: %s", refusedSeed)
	}
	certRequired := cases[len(cases)-1].err.Error()
	if !strings.Contains(certRequired, "asks for a client certificate (verify: true in its tls block), which this process does not present: set nats.tls_cert and nats.tls_key") {
		t.Errorf("a server that asks for a client certificate is not named as such: %s", certRequired)
	}
	closed := cases[len(cases)-2].err.Error()
	if !strings.Contains(closed, "closed the connection right after the TLS handshake, as it does when it asks for a client certificate") {
		t.Errorf("a server that closed the connection after the handshake is not named as one asking for a client certificate: %s", closed)
	}
}

// TestStartupPostgresCertificateRefused: database_url with
// sslmode=verify-full against a server whose certificate comes from a CA
// the process does not know (a private CA without sslrootcert=) was
// waited for at every attempt, "waiting for postgresql" without end. The
// server here answers PostgreSQL's SSLRequest and presents a self-signed
// certificate: the start must end, naming sslrootcert.
func TestStartupPostgresCertificateRefused(t *testing.T) {
	dsn := untrustedPostgres(t)
	pool, err := postgres.Open(t.Context(), dsn)
	if err == nil {
		pool.Close()
		t.Fatal("connected to a server whose certificate nothing trusts")
	}
	err = postgresConnectError(err)
	if depPostgres.retryable(err) {
		t.Errorf("a start waits out an untrusted certificate: %v", err)
	}
	if !strings.Contains(err.Error(), "sslrootcert=") {
		t.Errorf("the error does not name sslrootcert: %v", err)
	}
}

// untrustedPostgres is a server that answers PostgreSQL's SSLRequest and
// presents a self-signed certificate, and the URL that asks to verify it
// (sslmode=verify-full, no sslrootcert=).
func untrustedPostgres(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "pg.crt"), filepath.Join(dir, "pg.key")
	writeSelfSigned(t, crt, key)
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// SSLRequest: length 8, code 80877103; answered 'S', then TLS.
			req := make([]byte, 8)
			if _, err := io.ReadFull(c, req); err == nil {
				if _, err := c.Write([]byte{'S'}); err == nil {
					_ = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{pair}}).Handshake()
				}
			}
			_ = c.Close()
		}
	}()
	return "postgres://orderly@" + ln.Addr().String() + "/orderly?sslmode=verify-full&connect_timeout=10"
}

// TestMigratePostgresCertificateRefused: orderly migrate up, the first
// command an operator runs against a PostgreSQL behind a CA of their own
// (docs/deploy.md), names sslrootcert= as a service's start does; it said
// only what crypto/x509 said.
func TestMigratePostgresCertificateRefused(t *testing.T) {
	dsn := untrustedPostgres(t)
	for _, verb := range []string{"up", "status"} {
		out, err := runCmd(t, "migrate", verb, "--database-url", dsn)
		if err == nil || !strings.Contains(err.Error(), "sslrootcert=") {
			t.Errorf("migrate %s against an untrusted certificate: %v\n%s", verb, err, out)
		}
	}
}

// TestStartupNamesAClusterWithoutLeader: a node of deploy/nats started
// alone (its routes lead nowhere) answers every JetStream request
// "JetStream system temporarily unavailable", and the API waited for it
// without end on that line alone (decisions.md, hI21: the first fleet by
// the docs). It still waits, and its waiting line now says that the
// cluster has no leader and where to look.
func TestStartupNamesAClusterWithoutLeader(t *testing.T) {
	dsn := testenv.Postgres(t)
	dir := startupDir(t, "osl-")
	ns := newNATSServer(t, dir, fmt.Sprintf("server_name: lone\ncluster {\n  name: orderly\n  listen: \"127.0.0.1:%d\"\n"+
		"  routes: [\"nats-route://127.0.0.1:%d\", \"nats-route://127.0.0.1:%d\"]\n}\n", freePort(t), freePort(t), freePort(t)))
	// Not ns.start: its health check waits for a JetStream that a lone
	// node never has.
	ns.proc = startFaultProc(t, "nats-server", ns.logPath, []string{"PATH=/usr/bin:/bin"}, ns.bin, "-c", ns.conf)
	conf := writeStartupConfig(t, dir, dsn, ns.url())
	p := startFaultProc(t, "api", filepath.Join(dir, "api.log"), []string{"PATH=/usr/bin:/bin", "HOME=" + dir}, orderlyBin,
		"api", "--config", conf, "--listen", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	waitLogLine(t, p, "the NATS cluster orderly has no JetStream leader", 90*time.Second)
	if !p.alive() {
		t.Fatalf("the api stopped waiting:\n%s", logTail(p.log, 20))
	}
}
