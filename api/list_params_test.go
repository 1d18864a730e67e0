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
