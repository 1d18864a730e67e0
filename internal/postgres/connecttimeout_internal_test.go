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
