package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestForgedControlKillsNothing publishes a control message for a running
// order with no cancel request in PostgreSQL, as anyone who can publish on
// the bus could: the worker ignores it. A real cancel, sent after it on
// the same connection (so the worker handles it second), then kills the
// order with its own signal, and the order and its history say who asked,
// when and with which signal.
func TestForgedControlKillsNothing(t *testing.T) {
	s := newStack(t, "h1")
	o := s.submit(map[string]any{"host": "h1", "command": "sleep", "args": []string{"30"}, "timeout_seconds": 60}, "", http.StatusAccepted)
	s.waitFor(o.ID, 20*time.Second, func(o api.Order) bool { return o.Status == "running" })

	forged, _ := json.Marshal(map[string]any{"order_id": o.ID, "signal": "SIGKILL", "actor": "mallory"})
	if err := s.b.nc.Publish(queue.ControlSubject+"h1", forged); err != nil {
		t.Fatal(err)
	}
	if err := s.b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	code, b := s.do("POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{"signal": "SIGINT"})
	if code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, b)
	}
	var accepted api.Order
	if err := json.Unmarshal(b, &accepted); err != nil {
		t.Fatal(err)
	}
	if accepted.Cancel == nil || accepted.Cancel.Actor != "admin" || accepted.Cancel.Signal != "SIGINT" {
		t.Fatalf("cancel answer without the request: %s", b)
	}
	got := s.waitFor(o.ID, 20*time.Second, terminal)
	if got.Status != "killed" || got.Result == nil || got.Result.Signal == nil || *got.Result.Signal != "SIGINT" {
		t.Fatalf("order %s, result %+v: want killed by the recorded SIGINT, not the forged SIGKILL", got.Status, got.Result)
	}
	c := got.Cancel
	if c == nil || c.Actor != "admin" || c.Signal != "SIGINT" || c.RequestedAt.Before(before.Add(-time.Second)) || c.RequestedAt.After(time.Now()) {
		t.Fatalf("cancel record on the order: %+v", c)
	}
	checkCancelEvent(t, s, o.ID, "admin", "SIGINT")
}

// TestCancelQueuedRecordsWho: a queued order canceled never starts, and the
// order says who canceled it.
func TestCancelQueuedRecordsWho(t *testing.T) {
	s := newStack(t)
	o := s.submit(map[string]any{"host": "nobody-home", "command": "true"}, "", http.StatusAccepted)
	code, b := s.do("POST", "/v1/orders/"+o.ID.String()+"/cancel", nil)
	if code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, b)
	}
	got := s.get(o.ID)
	if got.Status != "canceled" || got.Cancel == nil || got.Cancel.Actor != "admin" || got.Cancel.Signal != "SIGTERM" {
		t.Fatalf("canceled order: %s %+v", got.Status, got.Cancel)
	}
	checkCancelEvent(t, s, o.ID, "admin", "SIGTERM")
}

// checkCancelEvent finds the cancel_requested row in the order's history.
func checkCancelEvent(t *testing.T, s *stack, id uuid.UUID, actor, signal string) {
	t.Helper()
	var n int
	err := s.b.pool.QueryRow(t.Context(), `SELECT count(*) FROM order_events
		WHERE order_id = $1 AND type = 'cancel_requested' AND actor = $2 AND detail->>'signal' = $3`, id, actor, signal).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d cancel_requested events by %s with %s, want 1", n, actor, signal)
	}
}

// TestSSEShowsOnlyTheOrdersHost: output published for an order on another
// host's subject (what another host's worker could do) never reaches the
// order's followers; its own worker's output does.
func TestSSEShowsOnlyTheOrdersHost(t *testing.T) {
	s := newStack(t)
	o := s.submit(map[string]any{"host": "h1", "command": "echo", "args": []string{"real"}}, "", http.StatusAccepted)
	forged := nats.NewMsg(queue.OutputSubjectOf("h2", o.ID))
	forged.Header.Set(queue.StreamHeader, "stdout")
	forged.Data = []byte("forged\n")
	if err := s.b.nc.PublishMsg(forged); err != nil {
		t.Fatal(err)
	}
	if err := s.b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The worker starts only once the follower is subscribed (its first
	// event): a follower that comes after the result is stored gets the
	// output in the finished event, not as stdout events.
	var out []string
	followEvents(t, s, o.ID, "", func(e testEvent) bool {
		if e.event == "queued" {
			s.startWorker("h1")
		}
		if e.event == "stdout" {
			out = append(out, e.data)
		}
		return e.event == "finished"
	})
	if len(out) != 1 || !strings.Contains(out[0], `"real\n"`) {
		t.Fatalf("stdout events %q, want only the worker's own", out)
	}
}

// TestWorkerWithAnotherHostsCredentials: a worker started for host b with
// the seed of host a's worker stopped after about five seconds, when
// binding the streams timed out, with a permissions violation on an
// inbox that named no cause. It now stops at once, saying the
// credentials do not permit host b's subjects and which subject the
// server refused; b's own seed binds.
func TestWorkerWithAnotherHostsCredentials(t *testing.T) {
	creds, err := natsembed.EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "srv", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Options{Dir: t.TempDir(), Port: -1, Logger: testenv.Logger(t), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	cfg := config.Default()
	cfg.NATS.URL = ns.ClientURL()
	connect := func(seed string, role natsRole, host string) (*nats.Conn, config.Config) {
		t.Helper()
		c := cfg
		c.Host, c.NATS.Nkey = host, seed
		opts, err := natsAuth(c, role)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := queue.Connect(c.NATS.URL, "test-"+host, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc, c
	}
	// The API defines the streams, as it does before workers bind.
	apiConn, apiCfg := connect(creds.API, roleAPI, "srv")
	if _, err := openQueue(t.Context(), apiConn, apiCfg, roleAPI, nil); err != nil {
		t.Fatal(err)
	}

	nc, wrong := connect(creds.Workers["a"], roleWorker, "b")
	start := time.Now()
	_, err = openQueue(t.Context(), nc, wrong, roleWorker, nil)
	var fatal fatalStartError
	if !errors.As(err, &fatal) || !strings.Contains(err.Error(), "is not host b's") ||
		!strings.Contains(err.Error(), "subscription to orderly.control.b") || time.Since(start) > 2*time.Second {
		t.Fatalf("worker b with a's credentials: %v after %s; want at once a fatal error naming host b and orderly.control.b",
			err, time.Since(start))
	}

	nc, right := connect(creds.Workers["b"], roleWorker, "b")
	if _, err := openQueue(t.Context(), nc, right, roleWorker, nil); err != nil {
		t.Fatalf("worker b with its own credentials: %v", err)
	}
}
