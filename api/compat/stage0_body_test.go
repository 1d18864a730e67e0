package compat

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStage0FalsyBodyIsNoVariables: stage0 read validate's and execute's
// body as `request.get_json() or {}`, so a falsy JSON body ran with no
// variables where orderly answered 400 "Invalid JSON body". A truthy body
// that is not an object, and one that is not JSON, stay refused.
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
	} {
		r := httptest.NewRequest("POST", "/api/runbooks/A.md/execute", strings.NewReader(tc.body))
		b, err := readBody(r, 1<<20)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err || len(b.EnvVars) != tc.env {
			t.Errorf("body %q: env %v, error %q; want %d variables, error %q", tc.body, b.EnvVars, got, tc.env, tc.err)
		}
	}
}
