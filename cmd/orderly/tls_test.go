package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestAPIRefusesTLSFilesItCannotLoad: a TLS key or certificate the API
// cannot load ends its start with the reason. net/http loaded them only
// once serving, so `orderly api` logged "api listening", told systemd it
// was ready, and held its port without ever accepting a connection, until
// someone stopped it (which exited 0).
func TestAPIRefusesTLSFilesItCannotLoad(t *testing.T) {
	dsn, natsURL := testenv.Postgres(t), testenv.NATS(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, cert, key)
	otherCert, otherKey := filepath.Join(dir, "other-cert.pem"), filepath.Join(dir, "other-key.pem")
	writeSelfSigned(t, otherCert, otherKey)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, cert, key string }{
		{"missing key", cert, filepath.Join(dir, "none.pem")},
		{"key of another certificate", cert, otherKey},
		{"certificate not PEM", garbage, key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgPath := filepath.Join(dir, "orderly.yaml")
			if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nhttp:\n  tls_cert: %q\n  tls_key: %q\n", tc.cert, tc.key)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			var out testenv.LogBuffer
			err := run(ctx, []string{"orderly", "api", "--config", cfgPath, "--database-url", dsn, "--nats-url", natsURL},
				nil, strings.NewReader(""), &out, &out)
			if ctx.Err() != nil {
				t.Fatalf("the API still ran after 30 s:\n%s", out.String())
			}
			if err == nil || !strings.Contains(err.Error(), "http.tls_cert and http.tls_key") {
				t.Fatalf("start: %v, want a refusal naming http.tls_cert and http.tls_key\n%s", err, out.String())
			}
			if strings.Contains(out.String(), "api listening") {
				t.Errorf("the API said it listens:\n%s", out.String())
			}
		})
	}
}

// TestAPIWarnsOfACertificateOutOfDate: an API given an expired
// http.tls_cert started and served it without a word, and every client
// that verifies refused it; one not valid yet the same. It now warns at
// start, naming the setting, the file and the date. A certificate in
// its dates gets no warning.
func TestAPIWarnsOfACertificateOutOfDate(t *testing.T) {
	dsn, natsURL := testenv.Postgres(t), testenv.NATS(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir, "walk-ca")
	now := time.Now()
	for _, tc := range []struct {
		name        string
		from, until time.Time
		want        string
	}{
		{"expired", now.Add(-30 * 24 * time.Hour), now.Add(-24 * time.Hour), "the API's certificate has expired"},
		{"not valid yet", now.Add(24 * time.Hour), now.Add(48 * time.Hour), "the API's certificate is not valid yet"},
		{"in its dates", now.Add(-time.Hour), now.Add(time.Hour), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crt, key := ca.leaf(t, dir, strings.ReplaceAll(tc.name, " ", "-"), []string{"127.0.0.1"}, tc.from, tc.until)
			cfgPath := filepath.Join(dir, "orderly.yaml")
			if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("listen: 127.0.0.1:0\nhttp:\n  tls_cert: %q\n  tls_key: %q\n", crt, key)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			var out testenv.LogBuffer
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, []string{"orderly", "api", "--config", cfgPath, "--database-url", dsn, "--nats-url", natsURL},
					nil, strings.NewReader(""), &out, &out)
			}()
			waitUntil(t, 30*time.Second, "api listening", func() bool { return strings.Contains(out.String(), "api listening") })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("api: %v\n%s", err, out.String())
			}
			var warning string
			for line := range strings.Lines(out.String()) {
				if strings.Contains(line, "the API's certificate") {
					warning = line
				}
			}
			switch {
			case tc.want == "" && warning != "":
				t.Errorf("a certificate in its dates is warned of: %s", warning)
			case tc.want != "" && (!strings.Contains(warning, tc.want) || !strings.Contains(warning, "setting=http.tls_cert") ||
				!strings.Contains(warning, crt) || !strings.Contains(warning, "level=WARN")):
				t.Errorf("no warning %q naming http.tls_cert and %s:\n%s", tc.want, crt, out.String())
			}
		})
	}
}
