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
