package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestNATSClientCertificate: a nats-server that verifies client
// certificates (verify: true in its tls block, deploy.md) could not take
// orderly at all, and a process pinned its NATS CA only through
// SSL_CERT_FILE, which the JWKS client reads too. With nats.tls_ca,
// nats.tls_cert and nats.tls_key (and no SSL_CERT_FILE) `orderly api` and
// `orderly worker` run an order end to end; without the client
// certificate, with a tls_ca that did not sign the server's certificate,
// or with a client certificate of a CA the server does not take, each
// ends its start, saying which key to change.
func TestNATSClientCertificate(t *testing.T) {
	dsn := testenv.Postgres(t)
	token := startupAdminToken(t, dsn)
	dir := startupDir(t, "ont-")
	ca := newTestCA(t, dir, "nats-ca")
	other := newTestCA(t, dir, "other-ca")
	srvCrt, srvKey := ca.leaf(t, dir, "nats", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	cliCrt, cliKey := ca.client(t, dir, "client")
	strangerCrt, strangerKey := other.client(t, dir, "stranger")
	ns := newNATSServer(t, dir, fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n",
		srvCrt, srvKey, ca.path))
	ns.start()
	natsURL := "tls://127.0.0.1:" + strconv.Itoa(ns.port)

	cases := []struct {
		name             string
		tlsCA, cert, key string
		want             []string // nil: the order runs
	}{
		{name: "with the client certificate", tlsCA: ca.path, cert: cliCrt, key: cliKey},
		{name: "without a client certificate", tlsCA: ca.path,
			want: []string{"for a client certificate (verify: true in its tls block), which this process does not present", "set nats.tls_cert and nats.tls_key"}},
		{name: "with a tls_ca that did not sign the server's", tlsCA: other.path, cert: cliCrt, key: cliKey,
			want: []string{"not trusted", "nats.tls_ca, " + other.path + ", does not hold the CA that signed it", "CN=nats-ca"}},
		{name: "with a client certificate of another CA", tlsCA: ca.path, cert: strangerCrt, key: strangerKey,
			want: []string{"the client certificate in nats.tls_cert " + strangerCrt + ": its ca_file must hold the CA that signed it"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := startupDir(t, "ontc-")
			conf := writeStartupConfig(t, sub, dsn, natsURL)
			b, _ := os.ReadFile(conf)
			keys := fmt.Sprintf("nats:\n  tls_ca: %q\n", tc.tlsCA)
			if tc.cert != "" {
				keys += fmt.Sprintf("  tls_cert: %q\n  tls_key: %q\n", tc.cert, tc.key)
			}
			if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "nats:\n", keys, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			apiProc, workerProc, listen := startAPIAndWorker(t, sub, conf)
			if tc.want == nil {
				waitServing(t, listen, token, apiProc, workerProc, time.Minute)
				return
			}
			for _, p := range []*faultProc{apiProc, workerProc} {
				// TLS 1.3's alert may come after the client's first write
				// fails: that broken pipe was retried, ~18 s for the API
				// (decisions.md, hJ22), and is no longer.
				if !p.waitExit(15 * time.Second) {
					t.Fatalf("%s still runs after 15 s:\n%s", p.name, logTail(p.log, 20))
				}
				if code := p.cmd.ProcessState.ExitCode(); code == 0 {
					t.Errorf("%s exited 0", p.name)
				}
				out := readLog(p)
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("%s: the log does not say %q:\n%s", p.name, w, out)
					}
				}
				if strings.Contains(out, "waiting for") {
					t.Errorf("%s waited for something waiting cannot fix:\n%s", p.name, out)
				}
			}
		})
	}
}

// TestServeExternalNATSWithClientCertificate: `orderly serve` with an
// external nats.url connects its API and worker through the same options
// as api and worker, so the keys take it to a server with verify: true,
// and an order runs; serve without the client certificate ends its start
// saying which keys to set.
func TestServeExternalNATSWithClientCertificate(t *testing.T) {
	dsn := testenv.Postgres(t)
	dir := startupDir(t, "ons-")
	ca := newTestCA(t, dir, "nats-ca")
	srvCrt, srvKey := ca.leaf(t, dir, "nats", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	cliCrt, cliKey := ca.client(t, dir, "client")
	ns := newNATSServer(t, dir, fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n",
		srvCrt, srvKey, ca.path))
	ns.start()
	conf := writeStartupConfig(t, dir, dsn, "tls://127.0.0.1:"+strconv.Itoa(ns.port))
	for i, tc := range []struct {
		name    string
		env     []string
		refused bool
	}{
		{"without the client certificate", []string{"ORDERLY_NATS__TLS_CA=" + ca.path}, true},
		{"with the client certificate", []string{"ORDERLY_NATS__TLS_CA=" + ca.path, "ORDERLY_NATS__TLS_CERT=" + cliCrt, "ORDERLY_NATS__TLS_KEY=" + cliKey}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
			data := filepath.Join(dir, "data-"+strconv.Itoa(i))
			env := append([]string{"PATH=/usr/bin:/bin", "HOME=" + dir}, tc.env...)
			p := startFaultProc(t, "serve", filepath.Join(dir, "serve-"+strconv.Itoa(i)+".log"), env, orderlyBin,
				"serve", "--config", conf, "--data-dir", data, "--listen", listen, "--host", "h1")
			if tc.refused {
				if !p.waitExit(15 * time.Second) {
					t.Fatalf("serve still runs after 15 s:\n%s", logTail(p.log, 20))
				}
				if out := readLog(p); !strings.Contains(out, "set nats.tls_cert and nats.tls_key") {
					t.Errorf("serve's log does not say to set nats.tls_cert and nats.tls_key:\n%s", out)
				}
				return
			}
			apiURL := "http://" + listen
			waitHTTPOK(t, apiURL+"/readyz", time.Minute, p)
			// serve's own admin token, which it writes at its start.
			b, err := os.ReadFile(filepath.Join(data, "admin.token"))
			if err != nil {
				t.Fatal(err)
			}
			token := strings.TrimSpace(string(b))
			id := submitStartupOrder(t, apiURL, token, "h1")
			waitUntil(t, time.Minute, "the order succeeds", func() bool {
				return startupOrderStatus(t, apiURL, token, id) == "succeeded"
			})
		})
	}
}

// TestNATSTLSKeysToAServerWithoutTLS: nats.tls_ca makes TLS required
// whatever nats.url's scheme (nats.go's RootCAs does so), so a nats://
// URL to a server without TLS ends the start; the error named tls:// in
// nats.url, which the URL did not hold, and said to write nats://, which
// it did. It names the key now.
func TestNATSTLSKeysToAServerWithoutTLS(t *testing.T) {
	dsn := testenv.Postgres(t)
	dir := startupDir(t, "onp-")
	ca := newTestCA(t, dir, "nats-ca")
	ns := newNATSServer(t, dir, "")
	ns.start()
	conf := writeStartupConfig(t, dir, dsn, ns.url())
	b, _ := os.ReadFile(conf)
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "nats:\n", fmt.Sprintf("nats:\n  tls_ca: %q\n", ca.path), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	apiProc, workerProc, _ := startAPIAndWorker(t, dir, conf)
	for _, p := range []*faultProc{apiProc, workerProc} {
		if !p.waitExit(15 * time.Second) {
			t.Fatalf("%s still runs after 15 s:\n%s", p.name, logTail(p.log, 20))
		}
		if out := readLog(p); !strings.Contains(out, "nats.tls_ca asks for TLS and the server offers none") || strings.Contains(out, "tls://") {
			t.Errorf("%s: the log does not name nats.tls_ca as what asks for TLS (or names tls://):\n%s", p.name, out)
		}
	}
}

// TestNATSTLSFilesRefusedAtStart: a NATS TLS file that is missing or is
// not what its key asks for ends the start before any connection, with an
// error naming the key and the file (nats.go's own name neither the key
// nor, for the pair, which file was wrong); the keys come from the
// environment here (ORDERLY_NATS__TLS_*).
func TestNATSTLSFilesRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "nats-ca")
	crt, key := ca.client(t, dir, "client")
	_, otherKey := ca.client(t, dir, "other")
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"tls_ca missing", []string{"ORDERLY_NATS__TLS_CA=" + missing}, "nats.tls_ca: open " + missing},
		{"tls_ca a key", []string{"ORDERLY_NATS__TLS_CA=" + key}, "nats.tls_ca: " + key + " holds no PEM certificate"},
		{"tls_cert missing", []string{"ORDERLY_NATS__TLS_CERT=" + missing, "ORDERLY_NATS__TLS_KEY=" + key}, "nats.tls_cert: open " + missing},
		{"tls_key missing", []string{"ORDERLY_NATS__TLS_CERT=" + crt, "ORDERLY_NATS__TLS_KEY=" + missing}, "nats.tls_key: open " + missing},
		{"tls_cert a key", []string{"ORDERLY_NATS__TLS_CERT=" + key, "ORDERLY_NATS__TLS_KEY=" + key}, "nats.tls_cert: " + key + " holds no PEM certificate"},
		{"tls_key of another certificate", []string{"ORDERLY_NATS__TLS_CERT=" + crt, "ORDERLY_NATS__TLS_KEY=" + otherKey},
			"nats.tls_cert and nats.tls_key (" + crt + ", " + otherKey + "): tls: private key does not match public key"},
		{"tls_cert without tls_key", []string{"ORDERLY_NATS__TLS_CERT=" + crt}, "nats.tls_key: nats.tls_cert is set without nats.tls_key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), []string{"orderly", "worker", "--host", "h1",
				"--database-url", "postgres://orderly@127.0.0.1:1/orderly", "--nats-url", "tls://127.0.0.1:1"},
				tc.env, strings.NewReader(""), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("start: %v, want an error saying %q\n%s", err, tc.want, out.String())
			}
		})
	}
}

// TestServerWarnsOfANATSKeyOthersRead: nats.tls_key readable by every
// local user lets any of them present the process's client certificate,
// as a seed file does (TestServerWarnsOfASeedFileOthersRead), and
// nats.listen_tls_key lets them pose as serve's embedded NATS: warned of
// at start, naming the file; 0600 is not.
func TestServerWarnsOfANATSKeyOthersRead(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, warning string }{
		{"NATS__TLS", "the NATS client certificate's key may be read by every local user"},
		// serve's embedded NATS server's key: whoever reads it can pose
		// as the server to the workers that join it.
		{"NATS__LISTEN_TLS", "the embedded NATS server's key may be read by every local user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crt, key := newTestCA(t, dir, "nats-ca").client(t, dir, tc.name)
			start := func() string {
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				var out bytes.Buffer
				_ = run(ctx, []string{"orderly", "worker", "--host", "h1",
					"--database-url", "postgres://orderly@127.0.0.1:1/orderly", "--nats-url", "nats://127.0.0.1:1"},
					[]string{"ORDERLY_" + tc.name + "_CERT=" + crt, "ORDERLY_" + tc.name + "_KEY=" + key}, strings.NewReader(""), &out, &out)
				return out.String()
			}
			if out := start(); strings.Contains(out, tc.warning) {
				t.Errorf("a 0600 key was warned of:\n%s", out)
			}
			if err := os.Chmod(key, 0o644); err != nil {
				t.Fatal(err)
			}
			if out := start(); !strings.Contains(out, tc.warning) || !strings.Contains(out, "path="+key) || !strings.Contains(out, "mode=644") {
				t.Errorf("a 0644 key: no warning naming it:\n%s", out)
			}
		})
	}
}
