package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// TestServeMigratePostgresCertificateRefused: orderly serve on an external
// database_url (sslmode=verify-full, a certificate from a CA the process
// does not know) first reaches PostgreSQL with its own migration, which
// ended the start with crypto/x509's words only; it names sslrootcert=
// now, as orderly migrate and the services do. serve's embedded NATS
// listens on a free port.
func TestServeMigratePostgresCertificateRefused(t *testing.T) {
	dsn := untrustedPostgres(t)
	dataDir := serveDataDir(t, "serve-tls-")
	var out bytes.Buffer
	err := run(t.Context(), []string{"orderly", "serve", "--data-dir", dataDir, "--database-url", dsn,
		"--listen", "127.0.0.1:" + strconv.Itoa(freePort(t)), "--host", "tls"},
		[]string{"ORDERLY_NATS__LISTEN=127.0.0.1:" + strconv.Itoa(freePort(t))}, strings.NewReader(""), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "sslrootcert=") {
		t.Errorf("serve against an untrusted certificate: %v\n%s", err, out.String())
	}
}
