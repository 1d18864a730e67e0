package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
)

// TestRunbookExecuteHonoursIdempotencyKey: POST
// /v1/runbooks/{name}/execute keys runs as POST /v1/orders keys orders.
// Two requests sent at once with one key are one run, answered to both;
// a retry after it finished (or while it is still queued) is that run
// again, whatever X-Correlation-Id it sends; the same key with other
// env_vars is 422 idempotency_key_reused naming the first run. Each run
// gets its own delegated token and correlation id, which the retries'
// fingerprints must not hold, and a retry leaves no token behind.
func TestRunbookExecuteHonoursIdempotencyKey(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	cfg := deployRunbook(t, "VERSION: the release", "echo deploying $VERSION", "h1")
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{"^runbook:"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	rb := *e
	rb.url = hs.URL
	count := func() int {
		t.Helper()
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE runbook = 'Deploy.md'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	execute := func(query string, body map[string]any, hdr ...string) (int, api.Order, []byte) {
		t.Helper()
		code, b := rb.do("alice", "POST", "/v1/runbooks/Deploy.md/execute"+query, body, hdr...)
		var o api.Order
		if code < 300 {
			if err := json.Unmarshal(b, &o); err != nil {
				t.Fatalf("decode the run: %v: %s", err, b)
			}
		}
		return code, o, b
	}
	body := map[string]any{"host": "h1", "env_vars": map[string]any{"VERSION": "1.2"}}

	// A double submit: both requests at once, one run for both.
	var (
		wg    sync.WaitGroup
		codes [2]int
		got   [2]api.Order
	)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], got[i], _ = execute("?wait=20", body, "Idempotency-Key", "deploy-1.2")
		}()
	}
	wg.Wait()
	if codes != [2]int{http.StatusOK, http.StatusOK} || got[0].ID != got[1].ID || got[0].Status != "succeeded" {
		t.Fatalf("a double submit with one key: %v, orders %s (%s) and %s (%s); want one run, finished", codes,
			got[0].ID, got[0].Status, got[1].ID, got[1].Status)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d runs recorded for one key, want 1", n)
	}
	first := got[0]

	// A retry once it finished, with another correlation id: the same run.
	code, again, b := execute("", body, "Idempotency-Key", "deploy-1.2", "X-Correlation-Id", "retry-2")
	if code != http.StatusOK || again.ID != first.ID || again.CorrelationID != first.CorrelationID {
		t.Fatalf("a retry of a finished run: %d %s", code, b)
	}

	// Another request under the key: refused, naming the first run.
	other := map[string]any{"host": "h1", "env_vars": map[string]any{"VERSION": "1.3"}}
	code, _, b = execute("", other, "Idempotency-Key", "deploy-1.2")
	var refusal struct {
		Error struct {
			Code    string         `json:"code"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &refusal); err != nil || code != http.StatusUnprocessableEntity ||
		refusal.Error.Code != "idempotency_key_reused" || refusal.Error.Details["order_id"] != first.ID.String() {
		t.Fatalf("the key with other env_vars: %d %s", code, b)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d runs recorded after the refusal, want 1", n)
	}

	// Still queued (no worker serves "offline"): a retry is that run.
	queued := map[string]any{"host": "offline", "env_vars": map[string]any{"VERSION": "1.2"}}
	code, q1, b := execute("", queued, "Idempotency-Key", "deploy-offline")
	if code != http.StatusAccepted || q1.Status != "queued" {
		t.Fatalf("a keyed run for a host without a worker: %d %s", code, b)
	}
	code, q2, b := execute("", queued, "Idempotency-Key", "deploy-offline")
	if code != http.StatusAccepted || q2.ID != q1.ID {
		t.Fatalf("a retry of a queued run: %d %s, want order %s", code, b, q1.ID)
	}
	// Without a key every request is a run of its own, as before.
	execute("", queued)
	if n := count(); n != 3 {
		t.Fatalf("%d runs recorded, want 3", n)
	}
	// Only the recorded runs' tokens were ever kept: the retries' went.
	var stray int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM runbook_delegations d
		WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = d.order_id)`).Scan(&stray); err != nil || stray != 0 {
		t.Fatalf("%d delegations of orders never recorded (%v)", stray, err)
	}
}

// TestRunbookRetryAfterAReloadOfItsDefaults: a run that names no host
// goes to runbooks.host; a reload that moves runbooks.host (and the
// runbooks' timeout) between the run and its retry leaves the retry the
// same request, answered with the first run. Its sum held the host the
// server picked, and the retry was 422 idempotency_key_reused although
// the client sent the same request.
func TestRunbookRetryAfterAReloadOfItsDefaults(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	cfg := deployRunbook(t, "VERSION: the release", "echo deploying $VERSION", "h1")
	var mu sync.Mutex
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{"^runbook:"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { mu.Lock(); defer mu.Unlock(); return cfg })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	rb := *e
	rb.url = hs.URL
	body := map[string]any{"env_vars": map[string]any{"VERSION": "1.2"}}
	code, b := rb.do("alice", "POST", "/v1/runbooks/Deploy.md/execute?wait=20", body, "Idempotency-Key", "deploy-default-host")
	var first api.Order
	if code != http.StatusOK || json.Unmarshal(b, &first) != nil || first.Host != "h1" || first.Status != "succeeded" {
		t.Fatalf("first run: %d %s", code, b)
	}
	mu.Lock()
	cfg.Host, cfg.Timeout = "h2", cfg.Timeout+time.Minute
	mu.Unlock()
	code, b = rb.do("alice", "POST", "/v1/runbooks/Deploy.md/execute?wait=20", body, "Idempotency-Key", "deploy-default-host")
	var again api.Order
	if code != http.StatusOK || json.Unmarshal(b, &again) != nil || again.ID != first.ID {
		t.Fatalf("retry after the reload: %d %s; want run %s", code, b, first.ID)
	}
}

// deployRunbook writes a runbook Deploy.md (its environment requirements
// env, its script script) into a new directory and returns the runbooks
// config that serves it, run on host.
func deployRunbook(t *testing.T, env, script, host string) config.Runbooks {
	t.Helper()
	dir := t.TempDir()
	doc := "# Deploy\n\n# Environment Requirements\n```yaml\n" + env + "\n```\n\n" +
		"# File System Requirements\n```yaml\nInput:\n  []\n```\n\n# Script\n```sh\n" + script + "\n```\n\n# History\n"
	if err := os.WriteFile(filepath.Join(dir, "Deploy.md"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default().Runbooks
	cfg.Dir, cfg.Host = dir, host
	return cfg
}
