package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestCleartextConnectionsAreWarnedOf: a NATS server with its tls block
// left commented, reached at another machine's address, and a
// database_url whose sslmode leaves the certificate unchecked (or is
// missing: pgx's prefer) were used without a word while everything
// crossed the network in the clear. Each is now warned of at start,
// naming the setting and the server; TLS, loopback and unix sockets are
// not. NATS is a real nats-server on this machine's non-loopback address;
// PostgreSQL's modes are read by pgx's own parser.
func TestCleartextConnectionsAreWarnedOf(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "walk-ca")
	ip := nonLoopbackIPv4(t)
	crt, key := ca.leaf(t, dir, "nats", []string{ip, "127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	plain := natsOn(t, &server.Options{Host: "0.0.0.0", Port: -1, NoSigs: true})
	withTLS := natsOn(t, &server.Options{Host: "0.0.0.0", Port: -1, NoSigs: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}, TLS: true})
	for _, tc := range []struct {
		name, url string
		opts      []nats.Option
		dsn       string
		want      []string // each a warning's words; none: no warning
	}{
		{name: "nats without tls, another address", url: fmt.Sprintf("nats://%s:%d", ip, plain.Addr().(*net.TCPAddr).Port),
			dsn:  "host=/run/postgresql dbname=orderly",
			want: []string{"the connection to NATS is not encrypted", "setting=nats.url", "server=" + ip}},
		{name: "nats without tls, loopback", url: fmt.Sprintf("nats://127.0.0.1:%d", plain.Addr().(*net.TCPAddr).Port),
			dsn: "postgres://orderly@127.0.0.1:5432/orderly?sslmode=disable"},
		{name: "nats with tls", url: fmt.Sprintf("tls://%s:%d", ip, withTLS.Addr().(*net.TCPAddr).Port),
			opts: []nats.Option{nats.RootCAs(ca.path)},
			dsn:  "postgres://orderly@db.example.net:5432/orderly?sslmode=verify-full&sslrootcert=" + ca.path},
		{name: "postgres sslmode disable", dsn: "postgres://orderly@db.example.net:5432/orderly?sslmode=disable",
			want: []string{"database_url reaches PostgreSQL over the network without TLS:", "server=db.example.net:5432"}},
		{name: "postgres without sslmode", dsn: "postgres://orderly@db.example.net/orderly",
			want: []string{"over the network with TLS unverified, or without TLS:", "server=db.example.net:5432"}},
		{name: "postgres sslmode require", dsn: "postgres://orderly@db.example.net/orderly?sslmode=require",
			want: []string{"over the network without checking its certificate:", "sslmode=verify-full"}},
		{name: "postgres two hosts, one unverified", dsn: "host=pg-a.example.net,127.0.0.1 dbname=orderly sslmode=require",
			want: []string{"server=pg-a.example.net:5432"}},
		{name: "postgres verify-ca", dsn: "postgres://orderly@db.example.net/orderly?sslmode=verify-ca&sslrootcert=" + ca.path},
		{name: "postgres unix socket", dsn: "postgres://postgres@/orderly?host=/run/postgresql&sslmode=disable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nc *nats.Conn
			if tc.url != "" {
				nc, err = nats.Connect(tc.url, tc.opts...)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
			}
			var buf bytes.Buffer
			warnCleartext(nc, tc.dsn, slog.New(slog.NewTextHandler(&buf, nil)))
			out := buf.String()
			if len(tc.want) == 0 && out != "" {
				t.Fatalf("warned of a protected connection:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) || !strings.Contains(out, "level=WARN") {
					t.Errorf("no warning saying %q:\n%s", w, out)
				}
			}
			if strings.Contains(tc.name, "one unverified") && strings.Contains(out, "127.0.0.1") {
				t.Errorf("the loopback host is warned of:\n%s", out)
			}
		})
	}
}

// natsOn starts a real nats-server with opts (a port of its choosing,
// -1) and stops it when the test ends.
func natsOn(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.StoreDir = filepath.Join(t.TempDir(), "js")
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

// nonLoopbackIPv4 is an address of this machine that is not loopback:
// the one a worker on another machine would reach its NATS by.
func nonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				return n.IP.String()
			}
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address to reach nats-server by, as another machine would")
	return ""
}

// TestAPIWarnsOfCleartextNATSAtStart: `orderly api` against a nats-server
// without TLS at another machine's address logs the warning once it has
// connected, among its start's lines.
func TestAPIWarnsOfCleartextNATSAtStart(t *testing.T) {
	dsn := testenv.Postgres(t)
	ip := nonLoopbackIPv4(t)
	ns := natsOn(t, &server.Options{Host: "0.0.0.0", Port: -1, NoSigs: true, JetStream: true, JetStreamMaxMemory: 1 << 30})
	url := fmt.Sprintf("nats://%s:%d", ip, ns.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithCancel(t.Context())
	var out testenv.LogBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"orderly", "api", "--listen", "127.0.0.1:0", "--database-url", dsn, "--nats-url", url},
			nil, strings.NewReader(""), &out, &out)
	}()
	waitUntil(t, 30*time.Second, "api listening", func() bool { return strings.Contains(out.String(), "api listening") })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("api: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "the connection to NATS is not encrypted") {
		t.Errorf("no warning of the cleartext NATS connection to %s:\n%s", url, out.String())
	}
}
