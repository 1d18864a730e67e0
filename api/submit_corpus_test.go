package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestSubmitCorpusThroughTheRouter posts every input of FuzzSubmitRequest's
// corpus (its seeds and what the fuzzer kept) to POST /v1/orders of the
// real API: what the fuzz target's checks refuse is answered with the
// status and the code they name; what they accept is recorded (202) or
// refused with a 4xx by what only the intake knows, never a 5xx.
func TestSubmitCorpusThroughTheRouter(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, in := range api.SubmitCorpus(t) {
		body, key, corr := in[0], in[1], in[2]
		if !sendable(key) || !sendable(corr) {
			continue // no HTTP client sends it (net/http refuses to)
		}
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, e.url+"/v1/orders", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["admin"])
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header["Idempotency-Key"] = []string{key}
		}
		if corr != "" {
			req.Header["X-Correlation-Id"] = []string{corr}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		status, code := api.SubmitChecks([]byte(body), key, corr)
		if status == 0 {
			if resp.StatusCode >= 500 {
				t.Errorf("%q (key %q, correlation %q): accepted by the checks, answered %d %s", body, key, corr, resp.StatusCode, b)
			}
			continue
		}
		var eb api.ErrorBody
		if err := json.Unmarshal(b, &eb); err != nil || resp.StatusCode != status || eb.Error.Code != code {
			t.Errorf("%q (key %q, correlation %q): answered %d %s, want %d %s", body, key, corr, resp.StatusCode, b, status, code)
		}
	}
}

// sendable reports whether v can be an HTTP header's value: no control
// byte but tab.
func sendable(v string) bool {
	return !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f })
}
