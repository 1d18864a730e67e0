package postgres

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
)

// TestInsertConnectingToAFrozenServerEnds: an order's insert whose
// context cannot end (the intake's, once its client left) needs a new
// connection, and the server's socket accepts it but nothing answers (a
// PostgreSQL stopped by SIGSTOP: its kernel still accepts). Without
// connect_timeout in the connection string, the insert now ends,
// unavailable, at defaultConnectTimeout; it waited for good.
func TestInsertConnectingToAFrozenServerEnds(t *testing.T) {
	timeout := defaultConnectTimeout
	defaultConnectTimeout = 300 * time.Millisecond
	t.Cleanup(func() { defaultConnectTimeout = timeout })
	dir, err := os.MkdirTemp("", "frozen-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range accepted {
			c.Close()
		}
	})
	cfg, err := poolConfig("host=" + dir + " port=5432 user=orderly dbname=orderly sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg) // connects lazily
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := New(pool)
	ended := make(chan error, 1)
	go func() {
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "frozen", Command: "true",
			Timeout: time.Minute, Principal: "alice", Source: "rest"}
		_, err := s.InsertOrder(context.WithoutCancel(t.Context()), o)
		ended <- err
	}()
	select {
	case err := <-ended:
		if order.ErrorCode(err) != order.CodeUnavailable {
			t.Fatalf("the insert against a server that answers nothing: %v, want unavailable", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the insert against a server that answers nothing did not end")
	}
}

// TestDefaultConnectTimeoutForms: the pool's connect_timeout is the
// connection string's when it sets one above 0, in either of its forms
// and for a Unix socket as for TCP; defaultConnectTimeout otherwise,
// including connect_timeout=0, which libpq reads as no bound at all: the
// wait for good that the default ends (an insert's context cannot end).
func TestDefaultConnectTimeoutForms(t *testing.T) {
	t.Setenv("PGCONNECT_TIMEOUT", "")
	for _, c := range []struct {
		dsn  string
		want time.Duration
	}{
		{"host=/run/postgresql dbname=orderly", defaultConnectTimeout},
		{"host=/run/postgresql dbname=orderly connect_timeout=3", 3 * time.Second},
		{"host=db.example port=5432 dbname=orderly connect_timeout=0", defaultConnectTimeout},
		{"postgres://orderly@db.example/orderly", defaultConnectTimeout},
		{"postgres://orderly@db.example/orderly?connect_timeout=25", 25 * time.Second},
		{"postgres://orderly@db.example/orderly?connect_timeout=0", defaultConnectTimeout},
		{"postgres://orderly@%2Frun%2Fpostgresql/orderly", defaultConnectTimeout},
		{"postgres://orderly@db-1.example,db-2.example/orderly?connect_timeout=2&target_session_attrs=read-write", 2 * time.Second},
	} {
		cfg, err := poolConfig(c.dsn)
		if err != nil {
			t.Errorf("%s: %v", c.dsn, err)
			continue
		}
		if got := cfg.ConnConfig.ConnectTimeout; got != c.want {
			t.Errorf("%s: connect_timeout %v, want %v", c.dsn, got, c.want)
		}
	}
}
