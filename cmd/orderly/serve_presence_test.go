package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestRestartedServeEndsItsPredecessorsPresence: an httpexec client of
// `orderly serve` waits for its order, queued behind a long one, when
// serve is SIGKILLed and started again on the same data dir at once.
// Its presence lives on after the kill (up to api.PresenceLife; here made
// to last, as a restart within that life finds it), and the new serve's
// worker, with a nats.lease_ttl below 15 s, claimed the order before it
// lapsed and ran it for nobody. The new serve ends the presence recorded
// in its data dir before its worker claims: the order is canceled at its
// claim, never started.
func TestRestartedServeEndsItsPredecessorsPresence(t *testing.T) {
	dsn := testenv.Postgres(t)
	dataDir := serveDataDir(t, "orderly-presence-")
	root := t.TempDir()
	copyTool(t, "echo", filepath.Join(root, "echo"))
	release := filepath.Join(dataDir, "release")
	conf := filepath.Join(dataDir, "orderly.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `nats:
  lease_ttl: 2s
  heartbeat: 300ms
worker:
  command_path: [%q, /usr/bin, /bin]
acl:
  allow: ["127.0.0.1/32", "::1/128"]
policy:
  - name: admin
    roles: [admin]
    hosts: ["*"]
    allow: [".*"]
  - name: httpexec
    principals: [httpexec-client]
    hosts: [srv]
    allow: [".*"]
compat:
  httpexec:
    enabled: true
    host: srv
    exec_root: %q
    principal: httpexec-client
`, root, root), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pool, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	p := startServe(t, dataDir, "--config", conf, "--database-url", dsn)
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	code, b := serveCall(t, p.url, token, "POST", "/v1/orders", map[string]any{"host": "srv", "command": "sh",
		"args": []string{"-c", `while [ ! -e "$1" ]; do sleep 0.1; done`, "_", release}, "timeout_seconds": 300})
	var long api.Order
	if code != http.StatusAccepted || json.Unmarshal(b, &long) != nil {
		t.Fatalf("submit: %d %s", code, b)
	}
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o644) })
	status := func(id uuid.UUID) (st string, started bool) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT status, started_at IS NOT NULL FROM orders WHERE id = $1`, id).Scan(&st, &started); err != nil {
			t.Fatal(err)
		}
		return st, started
	}
	waitUntil(t, time.Minute, "the long order runs", func() bool { st, _ := status(long.ID); return st == "running" })

	cut := make(chan error, 1)
	go func() {
		resp, err := http.Post(p.url+"/echo", "application/json", strings.NewReader(`{"args":["for nobody"]}`))
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %s", resp.Status)
		}
		cut <- err
	}()
	var compat, waiter uuid.UUID
	waitUntil(t, time.Minute, "the httpexec order is recorded, bound and published", func() bool {
		var n int
		return pool.QueryRow(ctx, `SELECT id, waiter FROM orders WHERE host = 'srv' AND source = 'httpexec' AND waiter IS NOT NULL`).Scan(&compat, &waiter) == nil &&
			pool.QueryRow(ctx, `SELECT count(*) FROM unpublished WHERE id = $1`, compat).Scan(&n) == nil && n == 0
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	if err := <-cut; err == nil {
		t.Fatal("the httpexec client got no error from a killed serve")
	}
	// The restart comes within the dead serve's presence, whatever this
	// machine's speed: the row is made to outlive the test.
	if tag, err := pool.Exec(ctx, `UPDATE api_presence SET alive_until = now() + interval '1 hour' WHERE instance = $1`, waiter); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("keep the killed serve's presence alive: %v (%d rows)", err, tag.RowsAffected())
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	p2 := startServe(t, dataDir, "--config", conf, "--database-url", dsn)
	waitUntil(t, time.Minute, "the httpexec order ends", func() bool {
		st, _ := status(compat)
		return st != "queued" && st != "running"
	})
	if st, started := status(compat); st != "canceled" || started {
		t.Fatalf("the killed serve's httpexec order: %s (started %t), want canceled, never started", st, started)
	}
	var reason string
	if err := pool.QueryRow(ctx, `SELECT detail->>'reason' FROM order_events WHERE order_id = $1 AND type = 'canceled'`,
		compat).Scan(&reason); err != nil || reason != postgres.WaiterGoneReason {
		t.Errorf("the cancel's reason: %q (%v), want its waiter gone", reason, err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM api_presence WHERE instance = $1`, waiter).Scan(&left); err != nil || left != 0 {
		t.Errorf("the killed serve's presence: %d rows (%v), want none", left, err)
	}
	// The new serve's own compat orders run.
	resp, err := http.Post(p2.url+"/echo", "application/json", strings.NewReader(`{"args":["for the new serve"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("an httpexec call on the new serve: %s", resp.Status)
	}
	p2.stop(t)
}
