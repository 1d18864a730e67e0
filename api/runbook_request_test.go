package api_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestRunbookValidateJudgesTheWholeRequest: validate's 200 says "the run
// would be accepted", but it judged only env_vars: timeout_seconds -1 or
// 1e8 and run_as "no body" were valid there and refused by execute. And
// execute took a timeout under a nanosecond (1e-12) as 0, the default
// runbooks.timeout, where POST /v1/orders refuses one under 0.001. Both
// routes now refuse each of these, with the same answer.
func TestRunbookValidateJudgesTheWholeRequest(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	rb := e.stage0Server(dir)
	for _, c := range []struct {
		body   map[string]any
		status int
		want   string
	}{
		{map[string]any{"timeout_seconds": -1}, http.StatusBadRequest, "timeout_seconds must not be negative"},
		{map[string]any{"timeout_seconds": 1e8}, http.StatusUnprocessableEntity, "timeout_seconds is too large"},
		{map[string]any{"timeout_seconds": 1e-12}, http.StatusBadRequest, "timeout_seconds must be at least 0.001"},
		{map[string]any{"timeout_seconds": 0.0004}, http.StatusBadRequest, "timeout_seconds must be at least 0.001"},
		{map[string]any{"run_as": "no body"}, http.StatusBadRequest, "run_as is not a valid user name"},
		{map[string]any{"host": "h1; reboot"}, http.StatusBadRequest, "host must be"},
	} {
		for _, path := range []string{"/v1/runbooks/Hello.md/validate", "/v1/runbooks/Hello.md/execute"} {
			code, b := rb.do("alice", "POST", path, c.body)
			if code != c.status || !strings.Contains(string(b), c.want) {
				t.Errorf("POST %s %v: %d %s, want %d %q", path, c.body, code, b, c.status, c.want)
			}
		}
	}
	// A timeout the order takes is taken as sent, on both routes.
	if code, b := rb.do("alice", "POST", "/v1/runbooks/Hello.md/validate", map[string]any{"timeout_seconds": 0.001}); code != http.StatusOK {
		t.Fatalf("validate, timeout 0.001: %d %s", code, b)
	}
	code, b := rb.do("alice", "POST", "/v1/runbooks/Hello.md/execute", map[string]any{"timeout_seconds": 2.5})
	var sub struct{ ID uuid.UUID }
	if err := json.Unmarshal(b, &sub); code != http.StatusAccepted || err != nil {
		t.Fatalf("execute, timeout 2.5: %d %s", code, b)
	}
	o, err := e.store.GetOrder(testenv.Context(t), sub.ID)
	if err != nil || o.Timeout.Seconds() != 2.5 {
		t.Fatalf("stored timeout: %v %v", err, o.Timeout)
	}
}

// TestRunbookChainHeadersOnce: of two X-Correlation-Id (or
// X-Recursion-Stack) headers execute took the first, where a proxy that
// reads the last judged another chain; two are 400 naming the header.
func TestRunbookChainHeadersOnce(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	rb := e.stage0Server(dir)
	before := countOrders(t, e)
	for _, h := range []string{"X-Correlation-Id", "X-Recursion-Stack"} {
		code, b := rb.do("alice", "POST", "/v1/runbooks/Hello.md/execute", map[string]any{}, h, `["a.md"]`, h, `["b.md"]`)
		if code != http.StatusBadRequest || !strings.Contains(string(b), `"field":"`+h+`"`) {
			t.Errorf("two %s: %d %s, want 400 naming it", h, code, b)
		}
	}
	if after := countOrders(t, e); after != before {
		t.Errorf("%d orders recorded by refused requests", after-before)
	}
}
