package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestServeEmbeddedNATSOverTLS: serve's embedded NATS with
// nats.listen_tls_cert, nats.listen_tls_key and nats.listen_tls_client_ca.
// A worker of another host joined it in the clear (decisions.md, hJ22).
// Now a real `orderly worker` process joins it over TLS with nats.tls_ca
// and a client certificate the client CA signed, and an order for its
// host runs end to end; without the CA, without a client certificate, or
// with one of another CA, the worker ends its start saying what to
// change. serve's own worker (in-process, no TLS keys) runs orders too. A
// renewed pair, written over the files and taken at a SIGHUP, is what new
// connections get, while the worker joined before keeps running orders.
// A client CA rotated (a bundle with a new CA written over the file) is
// taken at a SIGHUP too: a client the new CA signed joins, where it was
// refused until a restart.
func TestServeEmbeddedNATSOverTLS(t *testing.T) {
	dsn := testenv.Postgres(t)
	dataDir := serveDataDir(t, "onst-")
	dir := startupDir(t, "onstc-")
	ca := newTestCA(t, dir, "nats-ca")
	other := newTestCA(t, dir, "other-ca")
	day := 24 * time.Hour
	srvCrt, srvKey := ca.leaf(t, dir, "nats", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(day))
	cliCrt, cliKey := ca.client(t, dir, "w2")
	strangerCrt, strangerKey := other.client(t, dir, "stranger")
	apiPort, natsPort := freePort(t), freePort(t)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	natsURL := fmt.Sprintf("tls://127.0.0.1:%d", natsPort)
	// nats.workers in a file, so that a reload can add a host.
	conf := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(conf, []byte("nats:\n  workers: [w2]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dataDir, fmt.Sprintf("ORDERLY_NATS__LISTEN=127.0.0.1:%d", natsPort),
		"ORDERLY_NATS__LISTEN_TLS_CERT=" + srvCrt, "ORDERLY_NATS__LISTEN_TLS_KEY=" + srvKey,
		"ORDERLY_NATS__LISTEN_TLS_CLIENT_CA=" + ca.path, "ORDERLY_LIMITS__RATE_PER_IP=0", "ORDERLY_LIMITS__RATE_PER_PRINCIPAL=0"}
	sv := startFaultProc(t, "serve", filepath.Join(dir, "serve.log"), env, orderlyBin, "serve", "--config", conf, "--data-dir", dataDir,
		"--listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "--host", "srv", "--database-url", dsn)
	waitHTTPOK(t, apiURL+"/readyz", 2*time.Minute, sv)
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	waitLogLine(t, sv, "(over TLS: nats.tls_ca=<the CA that signed "+srvCrt+">, nats.tls_cert and nats.tls_key=", 30*time.Second)
	if out := readLog(sv); !strings.Contains(out, "--nats-url "+natsURL+" ") {
		t.Errorf("serve's banner does not give workers %s:\n%s", natsURL, out)
	}
	ordered := func(host string) {
		t.Helper()
		id := submitStartupOrder(t, apiURL, token, host)
		waitUntil(t, time.Minute, "the order for "+host+" succeeds", func() bool {
			return startupOrderStatus(t, apiURL, token, id) == "succeeded"
		})
	}
	ordered("srv")

	worker := func(name, host string, keys ...string) *faultProc {
		return startFaultProc(t, name, filepath.Join(dir, name+".log"), append([]string{"PATH=/usr/bin:/bin", "HOME=" + dir}, keys...),
			orderlyBin, "worker", "--host", host, "--nats-url", natsURL,
			"--nats-nkey", filepath.Join(dataDir, "nats-creds", "worker-"+host+".nk"), "--database-url", dsn)
	}
	caKey, certKeys := "ORDERLY_NATS__TLS_CA="+ca.path, []string{"ORDERLY_NATS__TLS_CERT=" + cliCrt, "ORDERLY_NATS__TLS_KEY=" + cliKey}
	for _, tc := range []struct {
		name string
		keys []string
		want string
	}{
		{"without nats.tls_ca", certKeys, "certificate signed by unknown authority (the NATS server's certificate is not trusted"},
		{"without a client certificate", []string{caKey}, "set nats.tls_cert and nats.tls_key"},
		{"with a client certificate of another CA", []string{caKey, "ORDERLY_NATS__TLS_CERT=" + strangerCrt, "ORDERLY_NATS__TLS_KEY=" + strangerKey},
			"the client certificate in nats.tls_cert " + strangerCrt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := worker("worker-"+strings.ReplaceAll(tc.name, " ", "-"), "w2", tc.keys...)
			if !p.waitExit(30 * time.Second) {
				t.Fatalf("the worker still runs after 30 s:\n%s", logTail(p.log, 20))
			}
			if code := p.cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("the worker exited 0")
			}
			if out := readLog(p); !strings.Contains(out, tc.want) || strings.Contains(out, "waiting for") {
				t.Errorf("the worker's log does not say %q, or it waited:\n%s", tc.want, out)
			}
		})
	}
	worker("worker-w2", "w2", append(certKeys, caKey)...)
	ordered("w2")

	// The certificate a new connection to the embedded NATS is served.
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client, err := tls.LoadX509KeyPair(cliCrt, cliKey)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(client tls.Certificate) (der []byte, err error) {
		t.Helper()
		nk, err := nats.NkeyOptionFromSeed(filepath.Join(dataDir, "nats-creds", "submitter.nk"))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(natsURL, nk, nats.Secure(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{client},
			VerifyConnection: func(cs tls.ConnectionState) error { der = cs.PeerCertificates[0].Raw; return nil }}))
		if err != nil {
			return nil, err
		}
		nc.Close()
		return der, nil
	}
	served := func() []byte {
		t.Helper()
		der, err := connect(client)
		if err != nil {
			t.Fatalf("connect to serve's NATS over TLS: %v", err)
		}
		return der
	}
	fileDER := func(path string) []byte {
		t.Helper()
		blk, _ := pem.Decode(fileBytes(t, path))
		return blk.Bytes
	}
	if !bytes.Equal(served(), fileDER(srvCrt)) {
		t.Fatal("serve's NATS does not serve nats.listen_tls_cert")
	}
	// Renewed as a renewer does: new files renamed over the old ones.
	newCrt, newKey := ca.leaf(t, dir, "nats-renewed", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(day))
	for from, to := range map[string]string{newCrt: srvCrt, newKey: srvKey} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	sv.signal(syscall.SIGHUP)
	waitLogLine(t, sv, "the embedded NATS server's certificate was loaded anew", 30*time.Second)
	if !bytes.Equal(served(), fileDER(srvCrt)) {
		t.Error("after the renewal and a reload a new connection did not get the renewed certificate")
	}
	ordered("w2")

	// A host added by a reload (the server's users reloaded in place,
	// its TLS with them) joins over TLS too.
	if err := os.WriteFile(conf, []byte("nats:\n  workers: [w2, w3]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sv.signal(syscall.SIGHUP)
	waitLogLine(t, sv, "embedded NATS credentials reloaded", 30*time.Second)
	worker("worker-w3", "w3", append(certKeys, caKey)...)
	ordered("w3")
	if !bytes.Equal(served(), fileDER(srvCrt)) {
		t.Error("after the users' reload a new connection did not get the renewed certificate")
	}

	// The client CA rotated: the new CA and the old in one file renamed
	// over nats.listen_tls_client_ca, then a SIGHUP.
	stranger, err := tls.LoadX509KeyPair(strangerCrt, strangerKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect(stranger); err == nil {
		t.Fatal("a client certificate of another CA was taken before the rotation")
	}
	bundle := append(fileBytes(t, other.path), fileBytes(t, ca.path)...)
	if err := os.WriteFile(ca.path+".new", bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ca.path+".new", ca.path); err != nil {
		t.Fatal(err)
	}
	sv.signal(syscall.SIGHUP)
	waitUntil(t, 30*time.Second, "a client certificate of the CA added to nats.listen_tls_client_ca taken", func() bool {
		_, err := connect(stranger)
		return err == nil
	})
	if _, err := connect(client); err != nil {
		t.Errorf("after the rotation a client certificate of the CA kept in the file: %v", err)
	}
}

// fileBytes is the content of file.
func fileBytes(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServeRefusesEmbeddedNATSTLSFilesItCannotLoad: a bad pair or client
// CA for the embedded NATS ends serve's start before anything starts,
// naming the key and the file.
func TestServeRefusesEmbeddedNATSTLSFilesItCannotLoad(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "nats-ca")
	crt, key := ca.leaf(t, dir, "nats", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	_, otherKey := ca.leaf(t, dir, "other", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, crt, key, clientCA, want string
	}{
		{"key of another certificate", crt, otherKey, "", "nats.listen_tls_cert " + crt + " and nats.listen_tls_key " + otherKey + ": tls: private key does not match public key"},
		{"certificate missing", missing, key, "", "nats.listen_tls_cert " + missing + ": stat"},
		{"client CA missing", crt, key, missing, "nats.listen_tls_client_ca " + missing + ": stat"},
		{"client CA of no certificate", crt, key, key, "nats.listen_tls_client_ca: " + key + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := serveDataDir(t, "onsr-")
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			env := []string{"ORDERLY_NATS__LISTEN=127.0.0.1:0", "ORDERLY_NATS__LISTEN_TLS_CERT=" + tc.crt, "ORDERLY_NATS__LISTEN_TLS_KEY=" + tc.key}
			if tc.clientCA != "" {
				env = append(env, "ORDERLY_NATS__LISTEN_TLS_CLIENT_CA="+tc.clientCA)
			}
			err := run(ctx, []string{"orderly", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv"},
				env, strings.NewReader(""), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve: %v, want %q\n%s", err, tc.want, out.String())
			}
			if _, err := os.Stat(filepath.Join(dataDir, "pg")); err == nil {
				t.Errorf("serve started its PostgreSQL before it refused the files")
			}
		})
	}
}

// TestEmbeddedNATSCleartextWarning: serve's embedded NATS on an address
// other machines reach, without TLS, is warned of; with TLS, or on
// loopback, it is not.
func TestEmbeddedNATSCleartextWarning(t *testing.T) {
	const warning = "the embedded NATS listens beyond this machine without TLS"
	for _, tc := range []struct {
		name, host string
		tls, warns bool
	}{
		{"every address, no TLS", "0.0.0.0", false, true},
		{"an address of this machine, no TLS", "10.0.0.5", false, true},
		{"every address, TLS", "0.0.0.0", true, false},
		{"loopback", "127.0.0.1", false, false},
		{"nats.listen without a host", "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			n := config.NATS{Listen: tc.host + ":4222"}
			if tc.tls {
				n.ListenTLSCert, n.ListenTLSKey = "/etc/orderly/nats.crt", "/etc/orderly/nats.key"
			}
			warnEmbeddedNATSCleartext(tc.host, n, slog.New(slog.NewTextHandler(&logs, nil)))
			if got := strings.Contains(logs.String(), warning); got != tc.warns {
				t.Errorf("warned %v, want %v:\n%s", got, tc.warns, logs.String())
			}
		})
	}
}

// TestServeWarnsOfEmbeddedNATSTLSSettingsWithAnExternalServer: the
// embedded NATS's TLS keys with an external nats.url configure nothing
// (serve starts no NATS server); they were dropped without a word, and an
// operator who set them believed the workers' connections encrypted.
// Each one set is now named in a warning; without nats.url none is.
func TestServeWarnsOfEmbeddedNATSTLSSettingsWithAnExternalServer(t *testing.T) {
	const warning = "ignored: the embedded NATS's TLS settings do nothing with an external nats.url"
	withTLS := config.NATS{ListenTLSCert: "/etc/orderly/nats.crt", ListenTLSKey: "/etc/orderly/nats.key", ListenTLSClientCA: "/etc/orderly/ca.crt"}
	for _, tc := range []struct {
		name string
		url  string
		want int
	}{
		{"external server", "nats://nats.example:4222", 3},
		{"embedded server", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			n := withTLS
			n.URL = tc.url
			warnListenTLSIgnored(n, slog.New(slog.NewTextHandler(&logs, nil)))
			if got := strings.Count(logs.String(), warning); got != tc.want {
				t.Errorf("%d warnings, want %d:\n%s", got, tc.want, logs.String())
			}
			for _, key := range []string{"nats.listen_tls_cert", "nats.listen_tls_key", "nats.listen_tls_client_ca"} {
				if tc.want > 0 && !strings.Contains(logs.String(), "setting="+key) {
					t.Errorf("no warning names %s:\n%s", key, logs.String())
				}
			}
		})
	}

	// nats.url's secrets (a token, a user's password) stay out of the
	// warning: it printed the URL as configured.
	var logs bytes.Buffer
	n := withTLS
	n.URL = "nats://t0ken-in-url@nats.example:4222,nats://api:pa55-in-url@nats2.example:4222"
	warnListenTLSIgnored(n, slog.New(slog.NewTextHandler(&logs, nil)))
	if strings.Contains(logs.String(), "t0ken-in-url") || strings.Contains(logs.String(), "pa55-in-url") ||
		!strings.Contains(logs.String(), "nats2.example") {
		t.Errorf("the warning does not show nats.url with its secrets hidden:\n%s", logs.String())
	}

	// serve itself says it, before it starts anything (a start whose
	// context has ended stops right after).
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	_ = run(ctx, []string{"orderly", "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--host", "srv", "--nats-url", "nats://127.0.0.1:1"},
		[]string{"ORDERLY_NATS__LISTEN_TLS_CERT=/etc/orderly/nats.crt", "ORDERLY_NATS__LISTEN_TLS_KEY=/etc/orderly/nats.key"}, strings.NewReader(""), &out, &out)
	if got := strings.Count(out.String(), warning); got != 2 {
		t.Errorf("serve with an external nats.url and the embedded NATS's pair: %d warnings, want 2:\n%s", got, out.String())
	}
}
