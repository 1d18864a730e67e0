package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/postgres"
)

// TestCompatOrderOfAKilledAPIIsCanceled: an httpexec client waits for its
// order, queued behind a long one on its host, when its `orderly api` is
// SIGKILLed. httpexec's command was a child of the request: it never ran
// once the server died. The worker, which runs on, cancels the order at
// its claim once the API's presence has lapsed (it ran it for nobody,
// and the client sending the request again ran it twice), and records
// why; the native order queued behind it, whose client holds its id,
// runs. The long order, started, runs to its end (accepted: docs/compat.md).
func TestCompatOrderOfAKilledAPIIsCanceled(t *testing.T) {
	release := filepath.Join(t.TempDir(), "release")
	s := httpexecStack(t, true, `  - name: admin
    roles: [admin]
    hosts: ["*"]
    allow: [".*"]
`)
	w := s.startWorker("hx")
	waitLogLine(t, w.faultProc, "worker consuming", time.Minute)

	ctx := t.Context()
	submit := func(body map[string]any) uuid.UUID {
		t.Helper()
		b, _ := json.Marshal(body)
		code, out := startupRequest(t, "POST", s.apiURL+"/v1/orders", s.token, b)
		if code != http.StatusAccepted {
			t.Fatalf("submit: %d %s", code, out)
		}
		var o struct{ ID uuid.UUID }
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	status := func(id uuid.UUID) (st string, started bool) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT status, started_at IS NOT NULL FROM orders WHERE id = $1`, id).Scan(&st, &started); err != nil {
			t.Fatal(err)
		}
		return st, started
	}
	long := submit(map[string]any{"host": "hx", "command": "sh",
		"args": []string{"-c", "while [ ! -e " + release + " ]; do sleep 0.1; done"}, "timeout_seconds": 300})
	waitUntil(t, time.Minute, "the long order runs", func() bool { st, _ := status(long); return st == "running" })

	// The httpexec client waits; the API is killed under it.
	cut := make(chan error, 1)
	go func() {
		resp, err := http.Post(s.apiURL+"/echo", "application/json", strings.NewReader(`{"args":["for nobody"]}`))
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %s", resp.Status)
		}
		cut <- err
	}()
	var compat uuid.UUID
	waitUntil(t, time.Minute, "the httpexec order is recorded", func() bool {
		return s.pool.QueryRow(ctx, `SELECT id FROM orders WHERE host = 'hx' AND source = 'httpexec'`).Scan(&compat) == nil
	})
	native := submit(map[string]any{"host": "hx", "command": "true"})
	// Both published (their marks cleared on the publish's ack): no API
	// is left to publish them.
	waitUntil(t, time.Minute, "both orders published", func() bool {
		var n int
		return s.pool.QueryRow(ctx, `SELECT count(*) FROM unpublished WHERE id = ANY($1)`, []uuid.UUID{compat, native}).Scan(&n) == nil && n == 0
	})
	var waiter uuid.UUID
	if err := s.pool.QueryRow(ctx, `SELECT waiter FROM orders WHERE id = $1`, compat).Scan(&waiter); err != nil {
		t.Fatalf("the httpexec order names no waiter: %v", err)
	}
	s.killAPI()
	s.note("api killed; the httpexec order %s queued behind %s", compat, long)
	if err := <-cut; err == nil {
		t.Fatal("the httpexec client got no error from a killed API")
	}
	waitUntil(t, time.Minute, "the killed API's presence lapses", func() bool {
		var lapsed bool
		return s.pool.QueryRow(ctx, `SELECT alive_until < now() FROM api_presence WHERE instance = $1`, waiter).Scan(&lapsed) == nil && lapsed
	})
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	waitUntil(t, time.Minute, "the native order behind it ends", func() bool { st, _ := status(native); return st == "succeeded" })
	if st, _ := status(long); st != "succeeded" {
		t.Errorf("the long order, started before the kill: %s, want succeeded", st)
	}
	if st, started := status(compat); st != "canceled" || started {
		t.Fatalf("the httpexec order of the killed API: %s (started %t), want canceled, never started", st, started)
	}
	var actor, reason string
	if err := s.pool.QueryRow(ctx, `SELECT actor, detail->>'reason' FROM order_events WHERE order_id = $1 AND type = 'canceled'`,
		compat).Scan(&actor, &reason); err != nil {
		t.Fatalf("the cancel's event: %v", err)
	}
	if !strings.HasPrefix(actor, "hx/") || reason != postgres.WaiterGoneReason {
		t.Errorf("canceled by %q for %q, want the worker of hx, for its waiter gone", actor, reason)
	}
}

// TestCompatWaiterOfAStoppedAPIIsCut: an httpexec client waits for its
// order, queued on a host without a worker, when its `orderly api` is
// stopped in order (SIGTERM: a rolling upgrade's replica). The stop ends
// the request's wait and cancels the order, still queued, for the client
// that will never learn its id. The client's connection is cut, as under
// a killed API: it was answered `200 OK` with an empty body, which reads
// as the command's success to a client that checks the status alone
// (probed by hJ8's rolling upgrade).
func TestCompatWaiterOfAStoppedAPIIsCut(t *testing.T) {
	s := httpexecStack(t, false, "")
	ctx := t.Context()
	answer := make(chan error, 1)
	go func() {
		resp, err := http.Post(s.apiURL+"/echo", "application/json", strings.NewReader(`{"args":["for nobody"]}`))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("answered %s %q", resp.Status, b)
		} else {
			err = nil
		}
		answer <- err
	}()
	var id uuid.UUID
	waitUntil(t, time.Minute, "the httpexec order is recorded and published", func() bool {
		var n int
		return s.pool.QueryRow(ctx, `SELECT id FROM orders WHERE host = 'hx' AND source = 'httpexec'`).Scan(&id) == nil &&
			s.pool.QueryRow(ctx, `SELECT count(*) FROM unpublished WHERE id = $1`, id).Scan(&n) == nil && n == 0
	})
	s.api.signal(syscall.SIGTERM)
	if !s.api.waitExit(30 * time.Second) {
		t.Fatal("the API did not stop within 30 s of its SIGTERM")
	}
	if err := <-answer; err != nil {
		t.Errorf("the httpexec client of a stopped API: %v, want its connection cut", err)
	}
	var st string
	if err := s.pool.QueryRow(ctx, `SELECT status FROM orders WHERE id = $1`, id).Scan(&st); err != nil || st != "canceled" {
		t.Errorf("the order of the stopped API's client: %q (%v), want canceled", st, err)
	}
}

// httpexecStack is a fault stack whose API serves httpexec for host hx,
// its commands (echo) in a root of their own, with the policy rules
// rules before httpexec's; with onPath, that root is first on the
// worker's command path too.
func httpexecStack(t *testing.T, onPath bool, rules string) *faultStack {
	t.Helper()
	root := t.TempDir()
	copyTool(t, "echo", filepath.Join(root, "echo"))
	return newFaultStackConf(t, func(conf string) string {
		if onPath {
			conf = strings.Replace(conf, "command_path: [/usr/bin, /bin]", fmt.Sprintf("command_path: [%q, /usr/bin, /bin]", root), 1)
		}
		return conf + fmt.Sprintf(`acl:
  allow: ["127.0.0.1/32", "::1/128"]
policy:
%s  - name: httpexec
    principals: [httpexec-client]
    hosts: [hx]
    allow: [".*"]
compat:
  httpexec:
    enabled: true
    host: hx
    exec_root: %q
    principal: httpexec-client
`, rules, root)
	})
}
