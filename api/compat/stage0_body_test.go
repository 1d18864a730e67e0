package compat

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStage0FalsyBodyIsNoVariables: stage0 read validate's and execute's
// body as `request.get_json() or {}`, so a falsy JSON body ran with no
// variables where orderly answered 400 "Invalid JSON body". A truthy body
// that is not an object, and one that is not JSON, stay refused; so is a
// falsy env_vars in an object (`{"env_vars": []}`), and a truthy one that
// is not an object.
func TestStage0FalsyBodyIsNoVariables(t *testing.T) {
	for _, tc := range []struct {
		body string
		env  int
		err  string
	}{
		{"", 0, ""},
		{"[]", 0, ""},
		{" 0 ", 0, ""},
		{"0.0", 0, ""},
		{"false", 0, ""},
		{`""`, 0, ""},
		{"null", 0, ""},
		{"{}", 0, ""},
		{"\xef\xbb\xbf[]", 0, ""}, // with a BOM, as Flask read it
		{`{"env_vars":{"A":"1"}}`, 1, ""},
		{"[1]", 0, "Invalid JSON body"},
		{"1", 0, "Invalid JSON body"},
		{`"x"`, 0, "Invalid JSON body"},
		{"true", 0, "Invalid JSON body"},
		{"[] []", 0, "Invalid JSON body"},
		{"{", 0, "Invalid JSON body"},
		// A falsy env_vars is no variables too (eleventh round).
		{`{"env_vars": []}`, 0, ""},
		{`{"env_vars": 0}`, 0, ""},
		{`{"env_vars": ""}`, 0, ""},
		{`{"env_vars": false}`, 0, ""},
		{`{"env_vars": null}`, 0, ""},
		{`{"env_vars": {}}`, 0, ""},
		{`{"env_vars": [], "env_vars": {"A": "1"}}`, 1, ""},
		{`{"env_vars": ["A"]}`, 0, "Invalid JSON body"},
		{`{"env_vars": "A=1"}`, 0, "Invalid JSON body"},
		{`{"env_vars": true}`, 0, "Invalid JSON body"},
		{`{"env_vars": 1}`, 0, "Invalid JSON body"},
		{`{"env_vars": [], "x": "\ud800"}`, 0, "Invalid JSON body"},
	} {
		r := httptest.NewRequest("POST", "/api/runbooks/A.md/execute", strings.NewReader(tc.body))
		b, status, err := readBody(r, 1<<20)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err || len(b.EnvVars) != tc.env || (err != nil) != (status == http.StatusBadRequest) {
			t.Errorf("body %q: env %v, %d %q; want %d variables, error %q", tc.body, b.EnvVars, status, got, tc.env, tc.err)
		}
	}
}

// TestStage0BodyTooLargeIs413: a validate or execute body over
// http.max_body_bytes is 413 "Request body too large", as on the Vigrid
// and httpexec surfaces and the native API, whether its Content-Length
// says so (refused unread) or it turns out longer; it was 400, which
// calls a limit of orderly's the client's malformed request.
func TestStage0BodyTooLargeIs413(t *testing.T) {
	declared := httptest.NewRequest("PATCH", "/api/runbooks/A.md/validate", strings.NewReader(`{"env_vars":{"A":"12345"}}`))
	undeclared := httptest.NewRequest("PATCH", "/api/runbooks/A.md/validate", strings.NewReader(`{"env_vars":{"A":"12345"}}`))
	undeclared.ContentLength = -1 // chunked: the length shows only when read
	for _, r := range []*http.Request{declared, undeclared} {
		if _, status, err := readBody(r, 10); status != http.StatusRequestEntityTooLarge || err == nil || err.Error() != "Request body too large" {
			t.Errorf("a body over the limit (Content-Length %d): %d %v, want 413 Request body too large", r.ContentLength, status, err)
		}
	}
}
