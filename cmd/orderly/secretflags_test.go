package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/natsembed"
)

// TestServerWarnsOfAPasswordOnTheCommandLine: a --database-url or
// --nats-url with a password is in /proc/<pid>/cmdline, which every local
// user (and every order the worker runs, as whichever user) reads for as
// long as the server runs. The server says so once at start, naming the
// flag and never the value; the same URL from the environment is not
// warned of.
func TestServerWarnsOfAPasswordOnTheCommandLine(t *testing.T) {
	const dbPass, natsPass = "Sec4etDBpass", "Sec4etNATSpass"
	start := func(args []string, env []string) string {
		// Canceled from the start: the server loads its config, logs,
		// and stops while waiting for PostgreSQL, which it never reaches.
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, append([]string{"orderly", "api", "--listen", "127.0.0.1:0"}, args...), env, strings.NewReader(""), &out, &out)
		if strings.Contains(out.String(), dbPass) || strings.Contains(out.String(), natsPass) {
			t.Errorf("a password reached the log:\n%s", out.String())
		}
		return out.String()
	}
	out := start([]string{"--database-url", "postgres://orderly:" + dbPass + "@127.0.0.1:1/orderly",
		"--nats-url", "nats://api:" + natsPass + "@127.0.0.1:1"}, nil)
	for _, flag := range []string{"flag=--database-url", "flag=--nats-url"} {
		if !strings.Contains(out, "a password is on the command line") || !strings.Contains(out, flag) {
			t.Errorf("no warning naming %s:\n%s", flag, out)
		}
	}
	out = start([]string{"--database-url", "host=127.0.0.1 port=1 user=orderly password=" + dbPass}, nil)
	if !strings.Contains(out, "flag=--database-url") {
		t.Errorf("a keyword/value DSN's password: no warning:\n%s", out)
	}
	// libpq's reading of a URL's query, where net/url dropped a pair
	// holding a ";" and saw no password.
	out = start([]string{"--database-url", "postgres://orderly@127.0.0.1:1/orderly?sslmode=disable&password=" + dbPass + ";x"}, nil)
	if !strings.Contains(out, "flag=--database-url") {
		t.Errorf("a URL's ?password= with a \";\": no warning:\n%s", out)
	}
	out = start(nil, []string{"ORDERLY_DATABASE_URL=postgres://orderly:" + dbPass + "@127.0.0.1:1/orderly",
		"ORDERLY_NATS__URL=nats://api:" + natsPass + "@127.0.0.1:1"})
	if strings.Contains(out, "a password is on the command line") {
		t.Errorf("warned of a password set in the environment:\n%s", out)
	}
	out = start([]string{"--database-url", "postgres://orderly@127.0.0.1:1/orderly?passfile=/etc/orderly/pgpass"}, nil)
	if strings.Contains(out, "a password is on the command line") {
		t.Errorf("warned of a URL without a password:\n%s", out)
	}
}

// TestServerWarnsOfAConfigFileOthersRead: a config file that holds an
// HS256 secret (which signs an admin token for whoever reads it) or a
// URL's password, and that every local user may read (0644, as an editor
// or `orderly import > file` leaves it under umask 022), is named at
// start with the keys it holds, never their values; 0600 is not.
func TestServerWarnsOfAConfigFileOthersRead(t *testing.T) {
	const secret = "Sec4etSec4etSec4etSec4etSec4etSec4et"
	file := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(file, []byte("database_url: postgres://orderly:"+secret+"@127.0.0.1:1/orderly\n"+
		"auth:\n  jwt:\n    algorithm: HS256\n    secret: "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() string {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, []string{"orderly", "api", "--config", file, "--listen", "127.0.0.1:0"}, nil, strings.NewReader(""), &out, &out)
		if strings.Contains(out.String(), secret) {
			t.Errorf("a secret reached the log:\n%s", out.String())
		}
		return out.String()
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	out := start()
	if !strings.Contains(out, "the config file holds secrets and every local user may read it") ||
		!strings.Contains(out, "auth.jwt.secret") || !strings.Contains(out, "database_url") {
		t.Errorf("a 0644 config file with secrets: no warning naming them:\n%s", out)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := start(); strings.Contains(out, "the config file holds secrets") {
		t.Errorf("a 0600 config file was warned of:\n%s", out)
	}
}

// TestServerWarnsOfASeedFileOthersRead: a NATS seed every local user may
// read (0644, a copy made under umask 022) lets any of them connect as
// the process's role: a worker's seed takes its host's orders. serve
// refuses its own such seeds; the api and worker, whose seeds come from
// elsewhere (a Secret mounted 0440, compose's secrets dir), warn at start,
// naming the file; 0600 is not warned of.
func TestServerWarnsOfASeedFileOthersRead(t *testing.T) {
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	const warning = "the NATS seed file may be read by every local user"
	start := func() string {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, []string{"orderly", "worker", "--host", "h1", "--nats-nkey", creds.Workers["h1"],
			"--database-url", "postgres://orderly@127.0.0.1:1/orderly", "--nats-url", "nats://127.0.0.1:1"}, nil, strings.NewReader(""), &out, &out)
		return out.String()
	}
	if out := start(); strings.Contains(out, warning) {
		t.Errorf("a 0600 seed was warned of:\n%s", out)
	}
	if err := os.Chmod(creds.Workers["h1"], 0o644); err != nil {
		t.Fatal(err)
	}
	if out := start(); !strings.Contains(out, warning) || !strings.Contains(out, "mode=644") {
		t.Errorf("a 0644 seed: no warning:\n%s", out)
	}
}

// TestServerWarnsOfAKeywordPasswordSpacedOut: libpq and pgx take spaces
// around a keyword's = ("password = secret"), and the redactions hide
// that password, but the warnings looked for "password=" only: such a
// database_url on the command line, or in a config file every local
// user may read, was not warned of.
func TestServerWarnsOfAKeywordPasswordSpacedOut(t *testing.T) {
	const dbPass = "Sec4etDBpass"
	dsn := "host=127.0.0.1 port=1 user=orderly password = " + dbPass
	start := func(args ...string) string {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, append([]string{"orderly", "api", "--listen", "127.0.0.1:0"}, args...), nil, strings.NewReader(""), &out, &out)
		if strings.Contains(out.String(), dbPass) {
			t.Errorf("a password reached the log:\n%s", out.String())
		}
		return out.String()
	}
	if out := start("--database-url", dsn); !strings.Contains(out, "a password is on the command line") || !strings.Contains(out, "flag=--database-url") {
		t.Errorf("--database-url %q: no warning:\n%s", "… password = …", out)
	}
	file := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(file, []byte("database_url: \""+dsn+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := start("--config", file); !strings.Contains(out, "the config file holds secrets and every local user may read it") || !strings.Contains(out, "database_url") {
		t.Errorf("a 0644 config file with database_url's %q: no warning:\n%s", "password = …", out)
	}
}

// TestServerWarnsOfANATSPasswordWithoutScheme: nats.go takes a URL
// without its scheme (user:password@host:4222 is nats://…), and the
// redactions hide its password, but the warning of a --nats-url with a
// password parsed it with net/url, which refuses it: not warned of.
func TestServerWarnsOfANATSPasswordWithoutScheme(t *testing.T) {
	const natsPass = "Sec4etNATSpass"
	for _, u := range []string{"api:" + natsPass + "@127.0.0.1:1", natsPass + "@127.0.0.1:1", "nats://127.0.0.1:2, api:" + natsPass + "@127.0.0.1:1"} {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		_ = run(ctx, []string{"orderly", "api", "--listen", "127.0.0.1:0", "--nats-url", u}, nil, strings.NewReader(""), &out, &out)
		if strings.Contains(out.String(), natsPass) {
			t.Errorf("a password reached the log:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "a password is on the command line") || !strings.Contains(out.String(), "flag=--nats-url") {
			t.Errorf("--nats-url %s: no warning:\n%s", strings.ReplaceAll(u, natsPass, "…"), out.String())
		}
	}
}

// TestAStartNamesADatabaseURLItCannotParseWithoutItsPassword: migrate
// (serve's first contact with PostgreSQL too) stops on a database_url
// pgx cannot parse with pgx's cause and the string with its password
// hidden. pgx's own redaction missed "password = …", which "orderly
// stopped" printed whole, from the environment as from a flag.
func TestAStartNamesADatabaseURLItCannotParseWithoutItsPassword(t *testing.T) {
	const dbPass = "Sec4etDBpass"
	for _, sub := range []string{"status", "up"} {
		var out bytes.Buffer
		err := run(t.Context(), []string{"orderly", "migrate", sub}, []string{"ORDERLY_DATABASE_URL=host=127.0.0.1 port=1 user=orderly password = " + dbPass + " sslmode=bogus"},
			strings.NewReader(""), &out, &out)
		if err == nil || strings.Contains(err.Error()+out.String(), dbPass) || !strings.Contains(err.Error(), "sslmode is invalid") {
			t.Errorf("migrate %s: got %v:\n%s\nwant pgx's cause, without the password", sub, err, out.String())
		}
	}
}
