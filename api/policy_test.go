package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestDenyOnTheResolvedPath: a deny rule written against a path holds
// when the client names the command bare (DESIGN §4.3). The API cannot
// know where "whoami" resolves on the host, so the worker applies the
// deny rules the API recorded to the path it resolved: the order ends
// rejected without running, a dry run too. The recorded rules stay out
// of answers.
func TestDenyOnTheResolvedPath(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"host": "h1", "command": "/usr/bin/whoami"})
	wantError(t, code, b, code, "forbidden")
	if code != http.StatusForbidden {
		t.Fatalf("/usr/bin/whoami: %d, want 403 at the API", code)
	}
	for _, dry := range []bool{false, true} {
		o := e.submit("alice", map[string]any{"host": "h1", "command": "whoami", "dry_run": dry}, "?wait=20", http.StatusOK)
		if o.Status != "rejected" || o.Result == nil || o.Result.Error == nil ||
			!strings.Contains(*o.Result.Error, `command denied by rule "ops" (it resolves to /usr/bin/whoami)`) {
			t.Errorf("whoami (dry run %v) on h1: %s %+v, want rejected by the deny on /usr/bin/whoami", dry, o.Status, o.Result)
		}
		if o.Result != nil && (o.Result.Code != "forbidden" || !strings.HasPrefix(*o.Result.Error, "forbidden: ")) {
			t.Errorf("whoami (dry run %v): result code %q for error %q, want forbidden, its prefix", dry, o.Result.Code, *o.Result.Error)
		}
		if o.Result != nil && o.Result.Stdout.Content != "" {
			t.Errorf("whoami ran: %q", o.Result.Stdout.Content)
		}
		_, raw := e.do("alice", "GET", "/v1/orders/"+o.ID.String(), nil)
		if bytes.Contains(raw, []byte(`"deny"`)) || bytes.Contains(raw, []byte("whoami( |$)")) {
			t.Errorf("the answer shows the recorded deny rules: %s", raw)
		}
	}
	// A command no deny names still runs.
	if o := e.submit("alice", map[string]any{"host": "h1", "command": "true"}, "?wait=20", http.StatusOK); o.Status != "succeeded" || o.Result == nil || o.Result.Code != "" {
		t.Errorf("true on h1: %s %+v, want succeeded without a code", o.Status, o.Result)
	}
}
