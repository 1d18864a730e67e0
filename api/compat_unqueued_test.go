package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// sourceStatuses are the statuses of the orders from source, oldest first.
func sourceStatuses(t *testing.T, e *apiEnv, source string) []string {
	t.Helper()
	rows, err := e.pool.Query(testenv.Context(t), `SELECT status FROM orders WHERE source = $1 ORDER BY submitted_at, id`, source)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCompatWithdrawsWhatItCouldNotQueue: when the bus refuses an order
// the intake recorded (the reconciler would queue it later), an httpexec
// request and a synchronous Vigrid execute are answered as failures, so
// their orders are canceled on record and never run; an asynchronous
// Vigrid execute is queued for execution all the same, and says so.
func TestCompatWithdrawsWhatItCouldNotQueue(t *testing.T) {
	var fail atomic.Int64
	hx := newHTTPExecSurface(t, envOptions{publishFailures: &fail})
	fail.Store(1)
	resp, err := http.Post(hx.url+"/echo", "application/json", strings.NewReader(`{"args":["x"]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasSuffix(string(b), " could not be queued: the message bus is unavailable; canceled\n") {
		t.Errorf("httpexec with the publish failing: %d %q, want 503 ... canceled", resp.StatusCode, b)
	}
	if got := sourceStatuses(t, hx.apiEnv, "httpexec"); len(got) != 1 || got[0] != string(order.StatusCanceled) {
		t.Errorf("httpexec's order is %v, want [canceled]", got)
	}

	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, publishFailures: &fail})
	vigridURL := startVigrid(t, e)
	execute := func(sync bool) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, vigridURL+"/api/v1/execute",
			strings.NewReader(`{"command":"echo","arguments":["x"],"synchronous":`+map[bool]string{true: "true", false: "false"}[sync]+`}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, m
	}
	fail.Store(1)
	if code, m := execute(true); code != http.StatusInternalServerError || m["message"] != "Internal server error" {
		t.Errorf("sync execute with the publish failing: %d %v, want 500 Internal server error", code, m)
	}
	if got := sourceStatuses(t, e, "vigrid"); len(got) != 1 || got[0] != string(order.StatusCanceled) {
		t.Errorf("the sync execute's order is %v, want [canceled]", got)
	}
	fail.Store(1)
	code, m := execute(false)
	if code != http.StatusAccepted || m["message"] != "Command queued for execution" || m["order_id"] == nil {
		t.Errorf("async execute with the publish failing: %d %v, want 202 queued", code, m)
	}
	if got := sourceStatuses(t, e, "vigrid"); len(got) != 2 || got[1] != string(order.StatusQueued) {
		t.Errorf("the async execute's order is %v, want [canceled queued]", got)
	}
}

// TestStage0WithdrawsWhatItCouldNotQueue: a stage0 execute whose run was
// recorded but not queued (the bus refused it) is answered as a failure,
// so its order is canceled on record and never runs: the reconciler
// queued it later, and a client told it failed ran it again.
func TestStage0WithdrawsWhatItCouldNotQueue(t *testing.T) {
	var fail atomic.Int64
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, publishFailures: &fail})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	url, token := startStage0(t, e, dir)
	fail.Store(1)
	resp := executeStage0(t, url, token, "Hello.md")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(b), "; canceled") || strings.Contains(string(b), "queued automatically") {
		t.Errorf("execute with the publish failing: %d %s, want stage0's 500 that says the run was canceled", resp.StatusCode, b)
	}
	if got := sourceStatuses(t, e, "stage0"); len(got) != 1 || got[0] != string(order.StatusCanceled) {
		t.Errorf("the execute's order is %v, want [canceled]", got)
	}
}
