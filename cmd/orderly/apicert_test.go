package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// renewPair writes a new leaf of ca over crt and key (each file renamed
// into place, as certbot and cert-manager replace theirs) and returns its
// serial.
func renewPair(t *testing.T, ca *testCA, dir, name, crt, key string, from, until time.Time) *big.Int {
	t.Helper()
	c, k := ca.leaf(t, dir, name, []string{"127.0.0.1"}, from, until)
	if err := os.Rename(k, key); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(c, crt); err != nil {
		t.Fatal(err)
	}
	return serialOf(t, crt)
}

// serialOf is the serial of the PEM certificate in file.
func serialOf(t *testing.T, file string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(file, strings.TrimSuffix(file, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// trusting is an HTTP client that trusts ca only; fresh, when set, makes
// each request a new connection (a new handshake).
func trusting(ca *testCA, fresh bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: fresh}}
}

// servedSerial is the serial of the certificate a new handshake with url
// gets.
func servedSerial(t *testing.T, c *http.Client, url string) *big.Int {
	t.Helper()
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("a new connection to the API: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.TLS.PeerCertificates[0].SerialNumber
}

// TestAPICertificateRenewedByReload: a renewed pair written over the
// files http.tls_cert and http.tls_key name is served to new connections
// after a reload, by the same running API, while an SSE follower opened
// before the reload keeps its stream and gets the order's end. Before,
// the pair was read once at start and a renewal took a restart, which
// dropped every follower and wait.
func TestAPICertificateRenewedByReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "renew-ca")
	now := time.Now()
	crt, key := ca.leaf(t, dir, "api", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	first := serialOf(t, crt)
	cfgPath := filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("http:\n  tls_cert: %q\n  tls_key: %q\n", crt, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackFrom(t, cfgPath, nil)
	if !strings.HasPrefix(s.url, "https://") {
		t.Fatalf("the API is not serving TLS: %s", s.url)
	}
	fresh, kept := trusting(ca, true), trusting(ca, false)
	send := func(c *http.Client, method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, s.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if got := servedSerial(t, fresh, s.url); got.Cmp(first) != 0 {
		t.Fatalf("served serial %s at start, want %s", got, first)
	}

	code, b := send(fresh, "POST", "/v1/orders", `{"host":"nobody-home","command":"true"}`)
	var o api.Order
	if code != http.StatusAccepted || json.Unmarshal(b, &o) != nil {
		t.Fatalf("submit: %d %s", code, b)
	}
	// The follower: its stream is opened, and its handshake done, before
	// the renewal.
	opened := make(chan *big.Int, 1)
	events := make(chan string, 16)
	go func() {
		defer close(events)
		req, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/v1/orders/"+o.ID.String()+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := kept.Do(req)
		if err != nil {
			events <- "error: " + err.Error()
			close(opened)
			return
		}
		defer resp.Body.Close()
		opened <- resp.TLS.PeerCertificates[0].SerialNumber
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- ev
			}
		}
		if err := sc.Err(); err != nil {
			events <- "error: " + err.Error()
		}
	}()
	if got := <-opened; got == nil || got.Cmp(first) != 0 {
		t.Fatalf("the follower's handshake got serial %v, want %s (%v)", got, first, <-events)
	}

	second := renewPair(t, ca, dir, "api-renewed", crt, key, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	code, b = send(fresh, "POST", "/v1/admin/reload", "")
	var res struct {
		RestartRequired []string `json:"restart_required"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &res) != nil || len(res.RestartRequired) != 0 {
		t.Fatalf("reload: %d %s, want 200 with nothing to restart for", code, b)
	}
	if got := servedSerial(t, fresh, s.url); got.Cmp(second) != 0 {
		t.Fatalf("a new connection after the renewal and reload got serial %s, want the renewed %s (the first was %s)", got, second, first)
	}

	if code, b := send(fresh, "POST", "/v1/orders/"+o.ID.String()+"/cancel", "{}"); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, b)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the follower's stream ended without the order's end")
			}
			if strings.HasPrefix(ev, "error: ") {
				t.Fatalf("the follower's stream, opened before the reload: %s", ev)
			}
			if ev == "finished" {
				return
			}
		case <-deadline:
			t.Fatal("the follower opened before the reload never got the order's end")
		}
	}
}

// TestAPICertificateBadRenewalRefused: a reload whose pair does not load
// (a key of another certificate, a file that is not PEM, a key file
// gone) or is out of its dates (expired, not valid yet) is refused,
// naming the file and the cause, and the old pair keeps serving; a
// reload naming a good pair at another path then takes it. Before, the
// reload was accepted and the files were not read at all.
func TestAPICertificateBadRenewalRefused(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "renew-ca")
	now := time.Now()
	crt, key := ca.leaf(t, dir, "api", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	first := serialOf(t, crt)
	cfgPath := filepath.Join(dir, "orderly.yaml")
	writeConfig := func(crt, key string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("http:\n  tls_cert: %q\n  tls_key: %q\n", crt, key)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(crt, key)
	s := newStackFrom(t, cfgPath, nil)
	fresh := trusting(ca, true)
	reload := func() (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", s.url+"/v1/admin/reload", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := fresh.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	_, otherKey := ca.leaf(t, dir, "other", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	for _, tc := range []struct {
		name string
		// bad makes the bad pair and returns the files the config names.
		bad  func(t *testing.T, name string) (crt, key string)
		want string
	}{
		{"key of another certificate", func(t *testing.T, name string) (string, string) {
			c, _ := ca.leaf(t, dir, name, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
			return c, otherKey
		}, "private key does not match public key"},
		{"certificate not PEM", func(t *testing.T, name string) (string, string) {
			c, k := ca.leaf(t, dir, name, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
			if err := os.WriteFile(c, []byte("half a renewal\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return c, k
		}, "failed to find any PEM data in certificate input"},
		{"key file gone", func(t *testing.T, name string) (string, string) {
			c, k := ca.leaf(t, dir, name, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
			if err := os.Remove(k); err != nil {
				t.Fatal(err)
			}
			return c, k
		}, "no such file or directory"},
		{"expired", func(t *testing.T, name string) (string, string) {
			return ca.leaf(t, dir, name, []string{"127.0.0.1"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
		}, "the certificate expired at"},
		{"not valid yet", func(t *testing.T, name string) (string, string) {
			return ca.leaf(t, dir, name, []string{"127.0.0.1"}, now.Add(24*time.Hour), now.Add(48*time.Hour))
		}, "the certificate is not valid until"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// At the served paths, and at new ones.
			for _, moved := range []bool{false, true} {
				name := strings.ReplaceAll(tc.name, " ", "-")
				if moved {
					name += "-moved"
				}
				c, k := tc.bad(t, name)
				file := c
				if strings.Contains(tc.want, "no such file") {
					file = k
				}
				if moved {
					writeConfig(c, k)
				} else {
					// The bad files copied over the served ones; the
					// served pair is put back after.
					for _, f := range [][2]string{{c, crt}, {k, key}} {
						b, err := os.ReadFile(f[0])
						if err != nil && !os.IsNotExist(err) {
							t.Fatal(err)
						}
						if os.IsNotExist(err) {
							_ = os.Rename(f[1], f[1]+".saved")
							continue
						}
						saved, err := os.ReadFile(f[1])
						if err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(f[1]+".saved", saved, 0o600); err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(f[1], b, 0o600); err != nil {
							t.Fatal(err)
						}
					}
					file = strings.NewReplacer(c, crt, k, key).Replace(file)
				}
				code, b := reload()
				var e struct {
					Error struct {
						Code    string `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal(b, &e); err != nil {
					t.Fatalf("reload: %d %s", code, b)
				}
				if code != http.StatusUnprocessableEntity || e.Error.Code != "unprocessable" ||
					!strings.Contains(e.Error.Message, file) || !strings.Contains(e.Error.Message, tc.want) {
					t.Errorf("moved=%v: reload answered %d %s, want a refusal naming %s and %q", moved, code, b, file, tc.want)
				}
				if got := servedSerial(t, fresh, s.url); got.Cmp(first) != 0 {
					t.Errorf("moved=%v: served serial %s after the refused reload, want the old %s", moved, got, first)
				}
				if moved {
					writeConfig(crt, key)
				} else {
					for _, f := range []string{crt, key} {
						if err := os.Rename(f+".saved", f); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
		})
	}
	// Through SIGHUP, as `orderly reload` without the API and systemd's
	// ExecReload do it: the refusal is an ERROR naming the file and why.
	expired, expiredKey := ca.leaf(t, dir, "hup-expired", []string{"127.0.0.1"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	writeConfig(expired, expiredKey)
	var logs testenv.LogBuffer
	a := &app{hup: make(chan os.Signal, 1)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.waitForSignals(ctx, s.watcher, slog.New(slog.NewJSONHandler(&logs, nil)), nil, nil) }()
	a.hup <- syscall.SIGHUP
	waitUntil(t, 10*time.Second, "the SIGHUP reload's refusal logged", func() bool { return strings.Contains(logs.String(), "reload refused") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	logLine, _, _ := strings.Cut(logs.String(), "\n")
	if err := json.Unmarshal([]byte(logLine), &line); err != nil || line["level"] != "ERROR" ||
		!strings.Contains(fmt.Sprint(line["error"]), expired) || !strings.Contains(fmt.Sprint(line["error"]), "the certificate expired at") {
		t.Fatalf("the SIGHUP refusal of an expired pair: %s, want an ERROR naming %s and its end", logs.String(), expired)
	}
	if got := servedSerial(t, fresh, s.url); got.Cmp(first) != 0 {
		t.Errorf("served serial %s after the refused SIGHUP, want the old %s", got, first)
	}

	// A good pair at another path: taken, and it is not a restart.
	renewed, renewedKey := ca.leaf(t, dir, "api-2027", []string{"127.0.0.1"}, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	writeConfig(renewed, renewedKey)
	code, b := reload()
	var res struct {
		ChangedKeys     []string `json:"changed_keys"`
		RestartRequired []string `json:"restart_required"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &res) != nil || !slices.Contains(res.ChangedKeys, "http.tls_cert") || len(res.RestartRequired) != 0 {
		t.Fatalf("reload of a pair at a new path: %d %s, want 200, http.tls_cert changed, nothing to restart for", code, b)
	}
	if got, want := servedSerial(t, fresh, s.url), serialOf(t, renewed); got.Cmp(want) != 0 {
		t.Fatalf("served serial %s after a reload naming a new path, want %s", got, want)
	}
	// Turning TLS off takes a restart, and says so.
	if err := os.WriteFile(cfgPath, []byte("log:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, b = reload()
	if code != http.StatusOK || json.Unmarshal(b, &res) != nil || !slices.Contains(res.RestartRequired, "http.tls_cert") {
		t.Fatalf("reload turning TLS off: %d %s, want http.tls_cert in restart_required", code, b)
	}
}

// TestAPICertificateRenewedOnDisk: a pair renewed on disk without a
// reload is served once the check sees the files change, over real TLS;
// a bad pair written there is logged as an ERROR naming the file and
// the cause, once, and the served one stays; a pair mended after it is
// taken. The check runs here every 50 ms (certCheckEvery is a minute).
func TestAPICertificateRenewedOnDisk(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "disk-ca")
	now := time.Now()
	crt, key := ca.leaf(t, dir, "api", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	var logs testenv.LogBuffer
	c, err := newAPICertificate(crt, key, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Not httptest's StartTLS: it adds its own certificate, which Go
	// serves before GetCertificate to a client that sends no SNI.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: c.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String()
	go c.run(t.Context(), 50*time.Millisecond)
	fresh := trusting(ca, true)
	serving := func(want *big.Int) func() bool {
		return func() bool { return servedSerial(t, fresh, url).Cmp(want) == 0 }
	}

	second := renewPair(t, ca, dir, "api-renewed", crt, key, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	waitUntil(t, 10*time.Second, "the pair renewed on disk served", serving(second))
	if !strings.Contains(logs.String(), `"by":"file change"`) {
		t.Errorf("the renewal is not logged:\n%s", logs.String())
	}

	_ = renewPair(t, ca, dir, "api-expired", crt, key, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	waitUntil(t, 10*time.Second, "the refusal of the expired pair logged", func() bool {
		return strings.Contains(logs.String(), "the certificate expired at")
	})
	// A few more checks of the same files: no second line, the old pair.
	time.Sleep(300 * time.Millisecond)
	var refusals []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["level"] == "ERROR" {
			refusals = append(refusals, m)
		}
	}
	if len(refusals) != 1 || refusals[0]["file"] != crt || !strings.Contains(fmt.Sprint(refusals[0]["error"]), crt) {
		t.Fatalf("refusals of the expired pair on disk: %v, want one ERROR naming %s", refusals, crt)
	}
	if got := servedSerial(t, fresh, url); got.Cmp(second) != 0 {
		t.Fatalf("served serial %s after an expired pair was written, want the old %s", got, second)
	}

	third := renewPair(t, ca, dir, "api-mended", crt, key, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	waitUntil(t, 10*time.Second, "the mended pair served", serving(third))
}

// TestAPIWarnsOfAnHTTPSKeyOthersRead: http.tls_key readable by every
// local user lets any of them pose as the API to its clients (and read
// the tokens they send it), worse than the NATS client key, which was
// warned of while this one was not, at start or when a renewal on disk
// wrote it so. Both are warned of now, naming the file; 0600 is not.
func TestAPIWarnsOfAnHTTPSKeyOthersRead(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "https-ca")
	now := time.Now()
	crt, key := ca.leaf(t, dir, "api", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	const warning = "the API's HTTPS key may be read by every local user"
	start := func() string {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, []string{"orderly", "api", "--listen", "127.0.0.1:0",
			"--database-url", "postgres://orderly@127.0.0.1:1/orderly", "--nats-url", "nats://127.0.0.1:1"},
			[]string{"ORDERLY_HTTP__TLS_CERT=" + crt, "ORDERLY_HTTP__TLS_KEY=" + key}, strings.NewReader(""), &out, &out)
		return out.String()
	}
	if out := start(); strings.Contains(out, warning) {
		t.Errorf("a 0600 key was warned of:\n%s", out)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := start(); !strings.Contains(out, warning) || !strings.Contains(out, "path="+key) || !strings.Contains(out, "mode=644") {
		t.Errorf("a 0644 key at start: no warning naming it:\n%s", out)
	}

	// A renewal on disk whose key others may read: taken, and said.
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	c, err := newAPICertificate(crt, key, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	renewed := renewPair(t, ca, dir, "api-renewed", crt, key, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	c.check(time.Now())
	if got := c.cur.Load().cert.Leaf.SerialNumber; got.Cmp(renewed) != 0 {
		t.Fatalf("served serial %s after the renewal, want %s", got, renewed)
	}
	if !strings.Contains(logs.String(), warning) || !strings.Contains(logs.String(), `"mode":"644"`) {
		t.Errorf("a renewal with a 0644 key: no warning:\n%s", logs.String())
	}
}

// TestAPICertificateHalfWrittenRenewalIsNoError: a renewal on disk writes
// its two files one after the other; a disk check between them reads the
// new certificate with the old key. That is not logged: the check after
// it finds the key written and serves the pair, with no ERROR at all.
// Files left that way for a second check are logged, once. Before, the
// first check logged an ERROR for a renewal that was fine a moment
// later (TestAPICertificateRenewedOnDisk failed so under load, its check
// every 50 ms).
func TestAPICertificateHalfWrittenRenewalIsNoError(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "half-ca")
	now := time.Now()
	crt, key := ca.leaf(t, dir, "api", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	var logs testenv.LogBuffer
	c, err := newAPICertificate(crt, key, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	errors := func() int { return strings.Count(logs.String(), `"level":"ERROR"`) }
	halfway := func(name string) (newKey string, serial *big.Int) {
		t.Helper()
		nc, nk := ca.leaf(t, dir, name, []string{"127.0.0.1"}, now.Add(-time.Minute), now.Add(90*24*time.Hour))
		serial = serialOf(t, nc)
		if err := os.Rename(nc, crt); err != nil { // the certificate first
			t.Fatal(err)
		}
		return nk, serial
	}

	nk, renewed := halfway("api-renewed")
	c.check(time.Now())
	if n := errors(); n != 0 {
		t.Fatalf("a check between a renewal's two files logged %d ERRORs:\n%s", n, logs.String())
	}
	if err := os.Rename(nk, key); err != nil {
		t.Fatal(err)
	}
	c.check(time.Now())
	if got := c.cur.Load().cert.Leaf.SerialNumber; got.Cmp(renewed) != 0 {
		t.Fatalf("served serial %s once the key was written, want %s", got, renewed)
	}
	if n := errors(); n != 0 {
		t.Fatalf("the renewal logged %d ERRORs:\n%s", n, logs.String())
	}

	// Left half written: said at the second check, once.
	_, _ = halfway("api-stuck")
	for range 4 {
		c.check(time.Now())
	}
	if n := errors(); n != 1 || !strings.Contains(logs.String(), "private key does not match public key") {
		t.Fatalf("files left half written logged %d ERRORs, want 1 naming the mismatch:\n%s", n, logs.String())
	}
	if got := c.cur.Load().cert.Leaf.SerialNumber; got.Cmp(renewed) != 0 {
		t.Fatalf("served serial %s with the files half written, want the last good %s", got, renewed)
	}
}

// TestStatusSaysTheServedCertificate: GET /v1/status's api_certificate
// and the metric orderly_api_certificate_expiry_timestamp_seconds say the
// certificate new connections get, at start and after a reload installed
// a renewed pair, so that a probe can tell a renewal that was not taken.
// Before, only the log line at each change said it.
func TestStatusSaysTheServedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "status-ca")
	now := time.Now()
	crt, key := ca.leaf(t, dir, "api", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	cfgPath := filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("http:\n  tls_cert: %q\n  tls_key: %q\n", crt, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackFrom(t, cfgPath, nil)
	c := trusting(ca, true)
	get := func(method, path string) []byte {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, s.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return b
	}
	// says fails unless the status and the metric name the certificate in
	// file, which new connections get.
	says := func(when, file string) {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(file, strings.TrimSuffix(file, ".crt")+".key")
		if err != nil {
			t.Fatal(err)
		}
		leaf := pair.Leaf
		if got := servedSerial(t, c, s.url); got.Cmp(leaf.SerialNumber) != 0 {
			t.Fatalf("%s: served serial %s, want %s", when, got, leaf.SerialNumber)
		}
		var st struct {
			Cert *certStatus `json:"api_certificate"`
		}
		b := get("GET", "/v1/status")
		if err := json.Unmarshal(b, &st); err != nil || st.Cert == nil {
			t.Fatalf("%s: /v1/status %s has no api_certificate (%v)", when, b, err)
		}
		var hex big.Int
		hex.SetString(st.Cert.SerialHex, 16)
		if st.Cert.Serial != leaf.SerialNumber.String() || hex.Cmp(leaf.SerialNumber) != 0 || st.Cert.File != crt ||
			st.Cert.Subject != leaf.Subject.String() || !st.Cert.NotAfter.Equal(leaf.NotAfter) || !st.Cert.NotBefore.Equal(leaf.NotBefore) {
			t.Fatalf("%s: api_certificate %+v, want %s's: serial %s, subject %s, %s to %s", when, *st.Cert, file,
				leaf.SerialNumber, leaf.Subject, leaf.NotBefore, leaf.NotAfter)
		}
		want := fmt.Sprintf("\norderly_api_certificate_expiry_timestamp_seconds %g\n", float64(leaf.NotAfter.Unix()))
		if m := get("GET", "/metrics"); !strings.Contains(string(m), want) {
			t.Fatalf("%s: /metrics has no %q", when, strings.TrimSpace(want))
		}
	}
	says("at start", crt)

	renewPair(t, ca, dir, "api-renewed", crt, key, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	get("POST", "/v1/admin/reload")
	says("after a reload took the renewal", crt)
}
