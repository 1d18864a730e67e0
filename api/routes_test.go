package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestMethodNotAllowedSaysWhatIs: a 405 names the methods the route
// serves in Allow (RFC 9110), in orderly's error envelope.
func TestMethodNotAllowedSaysWhatIs(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for path, want := range map[string]string{
		"/v1/orders": "GET, POST",
		"/healthz":   "GET",
		"/v1/orders/0193a5e0-0000-7000-8000-000000000000/cancel": "POST",
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, e.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != want ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("DELETE %s: %d, Allow %q (want %q)", path, resp.StatusCode, resp.Header.Get("Allow"), want)
		}
	}
}
