package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
)

// TestListParametersNameTheirField: a refused filter of GET /v1/orders
// names the parameter the client sent in details.field, and says what is
// wrong with it.
func TestListParametersNameTheirField(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, tc := range []struct{ query, field, message string }{
		{"principal=" + strings.Repeat("a", 257), "principal", "principal must be printable text of at most 256 bytes"},
		{"correlation=" + strings.Repeat("a", 201), "correlation", "correlation must be printable text of at most 200 bytes"},
		{"runbook=" + strings.Repeat("a", 256), "runbook", "runbook must be printable text of at most 255 bytes"},
		{"runbook=a%01b", "runbook", "runbook must be printable text of at most 255 bytes"},
		{"action=" + strings.Repeat("a", 64), "action", "action must be an action name"},
		// A newcomer's guesses at a status and a time: the refusal names
		// what the filter takes, as the CLI's own --since does.
		{"status=Failed", "status", `unknown status "Failed": give one or more of queued, running, succeeded, failed, timed_out, killed, canceled, interrupted, rejected, expired, separated by commas`},
		{"status=failed,timeout", "status", `unknown status "timeout": give one or more of queued, running, succeeded, failed, timed_out, killed, canceled, interrupted, rejected, expired, separated by commas`},
		{"since=yesterday", "since", `since must be an RFC 3339 time such as 2025-01-31T15:04:05Z, not "yesterday"`},
		{"until=2026-12-05", "until", `until must be an RFC 3339 time such as 2025-01-31T15:04:05Z, not "2026-12-05"`},
		// A limit that is no number was told it was out of range.
		{"limit=abc", "limit", `limit must be a whole number from 1 to 1000, not "abc"`},
		{"limit=0", "limit", `limit must be a whole number from 1 to 1000, not "0"`},
		{"limit=" + strings.Repeat("9", 100), "limit", `limit must be a whole number from 1 to 1000, not "` + strings.Repeat("9", 40) + `"`},
	} {
		code, body := e.do("admin", "GET", "/v1/orders?"+tc.query, nil)
		var eb api.ErrorBody
		if code != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil || eb.Error.Message != tc.message || eb.Error.Details["field"] != tc.field {
			t.Errorf("GET /v1/orders?%.40s: %d %s, want 400 naming %s: %q", tc.query, code, body, tc.field, tc.message)
		}
	}
	for _, q := range []string{"principal=" + strings.Repeat("a", 256), "correlation=" + strings.Repeat("a", 200), "runbook=" + strings.Repeat("a", 255)} {
		if code, body := e.do("admin", "GET", "/v1/orders?"+q, nil); code != http.StatusOK {
			t.Errorf("GET /v1/orders?%.40s at the limit: %d %s", q, code, body)
		}
	}
}

// TestSubmitWithoutAHostSaysItIsRequired: a body that leaves the host
// out is told that host is required, as one without a command is told
// of the command; it was told "host must be 1-128 characters of
// [A-Za-z0-9_-]", a complaint about a host the sender never gave.
func TestSubmitWithoutAHostSaysItIsRequired(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, body := range []map[string]any{
		{"command": "ls"},
		{"host": "", "command": "ls"},
	} {
		code, b := e.do("admin", "POST", "/v1/orders", body)
		var eb api.ErrorBody
		if code != http.StatusBadRequest || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "invalid_request" || eb.Error.Message != "host is required" || eb.Error.Details["field"] != "host" {
			t.Errorf("POST /v1/orders %v: %d %s, want 400 invalid_request: host is required", body, code, b)
		}
	}
	// A host that is there but no host id is still told the rule.
	code, b := e.do("admin", "POST", "/v1/orders", map[string]any{"host": "web 3", "command": "ls"})
	var eb api.ErrorBody
	if code != http.StatusBadRequest || json.Unmarshal(b, &eb) != nil || eb.Error.Message != "host must be 1-128 characters of [A-Za-z0-9_-]" {
		t.Errorf("POST /v1/orders with host \"web 3\": %d %s", code, b)
	}
}
