package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerWarnsOfADatabasePasswordOthersRead: a database_url whose
// password libpq reads where net/url does not (a query's password with
// a ";", which net/url dropped with its pair) opens the database for
// whoever reads the config file all the same: a file every local user
// may read that holds one is named at start with the key, as one with
// user:password@ is, and the password reaches no line.
func TestServerWarnsOfADatabasePasswordOthersRead(t *testing.T) {
	const password = "s3c;r3tPa55"
	file := filepath.Join(t.TempDir(), "orderly.yaml")
	dsn := "postgres://orderly@127.0.0.1:1/orderly?sslmode=disable&password=" + password
	if err := os.WriteFile(file, []byte("database_url: '"+dsn+"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	_ = run(ctx, []string{"orderly", "api", "--config", file, "--listen", "127.0.0.1:0"}, nil, strings.NewReader(""), &out, &out)
	if strings.Contains(out.String(), password) {
		t.Errorf("the password reached the log:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "the config file holds secrets and every local user may read it") ||
		!strings.Contains(out.String(), "database_url") {
		t.Errorf("a 0644 config file with a database password: no warning naming database_url:\n%s", out.String())
	}
}
