package compat

import "testing"

// TestVigridKillBody: a kill body is read as Flask's `get_json(silent=True)
// or {}`: no body and every falsy one (`null`, `[]`, `0`, `""`, `false`,
// `{}`) name no signal, so SIGTERM; `null` was SIGTERM while `[]`, `0`,
// `""` and `false` were 400. A truthy body that is not an object, and
// one that is not JSON, stay 400 "Invalid JSON body".
func TestVigridKillBody(t *testing.T) {
	for _, tc := range []struct {
		body string
		sig  string
		ok   bool
	}{
		{"", "SIGTERM", true},
		{" \n", "SIGTERM", true},
		{"null", "SIGTERM", true},
		{"[]", "SIGTERM", true},
		{"0", "SIGTERM", true},
		{"0.0", "SIGTERM", true},
		{`""`, "SIGTERM", true},
		{"false", "SIGTERM", true},
		{"{}", "SIGTERM", true},
		{"\xef\xbb\xbf[]", "SIGTERM", true},
		{`{"signal": "sigkill"}`, "SIGKILL", true},
		// Python's str.upper(): full case mapping, no locale.
		{`{"signal": "\u017figkill"}`, "SIGKILL", true},
		{`{"signal": "sig\u0131nt"}`, "SIGINT", true},
		{`{"signal": "stra\u00dfe"}`, "STRASSE", true},
		{`{"signal": "\ufb01"}`, "FI", true},
		{`{"signal": "\u1fb3"}`, "\u0391\u0399", true},
		{`{"signal": null}`, "SIGTERM", true},
		{`{"Signal": "SIGKILL"}`, "SIGTERM", true}, // not the field, as in a dict lookup
		{"[1]", "", false},
		{"1", "", false},
		{`"SIGKILL"`, "", false},
		{"true", "", false},
		{"{", "", false},
		{"[] []", "", false},
		{`{"signal": 9}`, "", false},
	} {
		sig, ok := killSignal([]byte(tc.body))
		if sig != tc.sig || ok != tc.ok {
			t.Errorf("kill body %q: %q %v, want %q %v", tc.body, sig, ok, tc.sig, tc.ok)
		}
	}
}
