package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
