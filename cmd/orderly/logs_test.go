package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// writeSelfSigned writes a certificate and key for 127.0.0.1 and returns
// a pool that trusts it.
func writeSelfSigned(t *testing.T, certPath, keyPath string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orderly test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestJSONLogsOneLinePerStateChange runs `orderly api` with log.format
// json and checks that every line it writes is a JSON object — its own,
// net/http's (a failed TLS handshake) and the standard log package's —
// and that accepting, rejecting, canceling and expiring an order each
// log one line with order_id, host and principal.
func TestJSONLogsOneLinePerStateChange(t *testing.T) {
	dsn, natsURL := testenv.Postgres(t), testenv.NATS(t)
	pool, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	token, sum := auth.NewToken()
	if _, err := postgres.New(pool).EnsureAPIToken(t.Context(), postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	roots := writeSelfSigned(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	cfgPath := filepath.Join(dir, "orderly.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:0
log:
  format: json
  level: info
http:
  tls_cert: %q
  tls_key: %q
`, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))), 0o600); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr testenv.LogBuffer
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		done <- run(ctx, []string{"orderly", "api", "--config", cfgPath, "--database-url", dsn, "--nats-url", natsURL},
			nil, strings.NewReader(""), &stdout, &stderr)
	}()
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			if l == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("a log line is not JSON: %q", l)
			}
			out = append(out, m)
		}
		return out
	}
	find := func(msg string) map[string]any {
		for _, m := range lines() {
			if m["msg"] == msg {
				return m
			}
		}
		return nil
	}
	var base string
	waitUntil(t, 30*time.Second, "api listening", func() bool {
		if m := find("api listening"); m != nil {
			base, _ = m["url"].(string)
		}
		return base != ""
	})
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" {
		t.Fatalf("api url %q: %v", base, err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	do := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}

	// No worker serves host "nowhere": its orders stay queued.
	code, o := do("POST", "/v1/orders", `{"host":"nowhere","command":"true"}`)
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %v", code, o)
	}
	if code, b := do("POST", "/v1/orders/"+o["id"].(string)+"/cancel", ""); code != http.StatusOK {
		t.Fatalf("cancel: %d %v", code, b)
	}
	if code, b := do("POST", "/v1/orders", `{"host":"nowhere","command":"true","env":{"LD_PRELOAD":"/tmp/x.so"}}`); code/100 != 4 {
		t.Fatalf("refused submit: %d %v", code, b)
	}
	if code, b := do("POST", "/v1/orders", `{"host":"nowhere","command":"true","expires_in_seconds":0.2}`); code != http.StatusAccepted {
		t.Fatalf("submit expiring: %d %v", code, b)
	}
	// net/http's error log: a client that does not speak TLS.
	if c, err := net.Dial("tcp", u.Host); err == nil {
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		_, _ = c.Read(make([]byte, 64))
		c.Close()
	}
	// The standard log package, as a library would use it.
	log.Printf("a library speaking through the log package")

	for _, msg := range []string{"order accepted", "order canceled", "order rejected", "order expired"} {
		var m map[string]any
		waitUntil(t, 20*time.Second, msg, func() bool { m = find(msg); return m != nil })
		for _, k := range []string{"order_id", "host", "principal"} {
			if v, _ := m[k].(string); v == "" {
				t.Errorf("%q has no %s: %v", msg, k, m)
			}
		}
		if m["host"] != "nowhere" || m["principal"] != "admin" {
			t.Errorf("%q: %v", msg, m)
		}
	}
	waitUntil(t, 10*time.Second, "net/http and log package lines", func() bool {
		s := stderr.String()
		return strings.Contains(s, "TLS handshake error") && strings.Contains(s, "a library speaking")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines() // every line, to the last, is JSON
}

// TestJSONLogsTheErrorThatStopsACommand: a server command that cannot
// start, once its logger exists, says why in its log format, not as text.
func TestJSONLogsTheErrorThatStopsACommand(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(cfgPath, []byte("log:\n  format: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// A database URL that cannot be parsed: api waits for a database that
	// is only unreachable (startup.go), but nothing can cure this one.
	cmd := exec.CommandContext(ctx, orderlyBin, "api", "--config", cfgPath,
		"--database-url", "postgres://orderly@127.0.0.1:notaport/none", "--nats-url", "nats://127.0.0.1:1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("api with a broken database URL: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("a line is not JSON: %q", l)
		}
	}
	var last map[string]any
	_ = json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if last["msg"] != "orderly stopped" || last["level"] != "ERROR" || last["error"] == "" {
		t.Fatalf("last line: %v", last)
	}
}
