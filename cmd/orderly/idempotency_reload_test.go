package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
)

// idemReloadConfig is a config whose default timeout and action
// definition a reload changes between a request and its retry.
func idemReloadConfig(defaultTimeout, actionTimeout, who string) string {
	return `limits:
  default_timeout: ` + defaultTimeout + `
actions:
  definitions:
    - name: greet
      params:
        - {name: who, pattern: "[a-z]{1,10}", default: "` + who + `"}
      command: ["/bin/echo", "hello", "{who}"]
      roles: [admin]
      hosts: ["idr"]
      run_as: ""
      timeout: ` + actionTimeout + `
`
}

// TestIdempotentRetryAcrossReload: a client retries a request whose
// answer it lost, byte for byte, after the operator reloaded a config
// that changes what the server fills in (the default timeout, an
// action's timeout and a param's default). The retry is the first
// order, over REST and over NATS alike: the key binds what the client
// sent, not what the server derived from its configuration. It was 422
// idempotency_key_reused, although the first request was accepted and
// ran.
func TestIdempotentRetryAcrossReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte(idemReloadConfig("30s", "20s", "world")), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStackFrom(t, path, nil, "idr")
	n := newNATSSubmitter(t, s.natsURL, "idr")
	body := map[string]any{"host": "idr", "command": "echo", "args": []string{"once"}}
	submit := func(key string) (int, api.Order, []byte) {
		code, b := s.do("POST", "/v1/orders?wait=20", body, "Idempotency-Key", key)
		var o api.Order
		_ = json.Unmarshal(b, &o)
		return code, o, b
	}
	runAction := func(key string) (int, api.Order, []byte) {
		code, b := s.do("POST", "/v1/actions/greet/run?wait=20", map[string]any{"host": "idr"}, "Idempotency-Key", key)
		var o api.Order
		_ = json.Unmarshal(b, &o)
		return code, o, b
	}
	code, rest, b := submit("reload-rest")
	if code != http.StatusOK || rest.Status != "succeeded" {
		t.Fatalf("first REST request: %d %s", code, b)
	}
	code, act, b := runAction("reload-action")
	if code != http.StatusOK || act.Status != "succeeded" {
		t.Fatalf("first action run: %d %s", code, b)
	}
	first := n.send(s.token, "reload-nats", body)
	if first.Order == nil {
		t.Fatalf("first NATS submission: %+v", first.Error)
	}

	if err := os.WriteFile(path, []byte(idemReloadConfig("45s", "25s", "there")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, b := s.do("POST", "/v1/admin/reload", nil); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, b)
	}

	code, again, b := submit("reload-rest")
	if code != http.StatusOK || again.ID != rest.ID {
		t.Errorf("REST retry after the reload: %d %s; want order %s", code, b, rest.ID)
	}
	code, again, b = runAction("reload-action")
	if code != http.StatusOK || again.ID != act.ID {
		t.Errorf("action retry after the reload: %d %s; want order %s", code, b, act.ID)
	}
	// Past the stream's duplicate window, as a publisher's retry on timeout.
	time.Sleep(2 * queue.SubmitDedupWindow)
	retry := n.send(s.token, "reload-nats", body)
	if retry.Order == nil || retry.Order.ID != first.Order.ID {
		t.Errorf("NATS retry after the reload: %+v / %+v; want order %s", retry.Order, retry.Error, first.Order.ID)
	}

	// A new key is judged by the new config: the default timeout is now 45 s.
	code, fresh, b := submit("reload-new")
	if code != http.StatusOK || fresh.TimeoutSecs != 45 {
		t.Errorf("a new request after the reload: %d %s; want the new default timeout", code, b)
	}
}
