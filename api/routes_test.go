package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestMethodNotAllowedSaysWhatIs: a 405 names the methods the route
// serves in Allow (RFC 9110), in orderly's error envelope for the API
// and as an error page for the web UI's pages.
func TestMethodNotAllowedSaysWhatIs(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, c := range []struct{ path, allow, contentType string }{
		{"/v1/orders", "GET, POST", "application/json"},
		{"/healthz", "GET, HEAD", "application/json"},
		{"/v1/orders/0193a5e0-0000-7000-8000-000000000000/cancel", "POST", "application/json"},
		{"/ui/signin", "GET, POST", "text/html"},
		{"/ui/", "GET", "text/html"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, e.url+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != c.allow ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) {
			t.Errorf("DELETE %s: %d, Allow %q (want %q), %s", c.path, resp.StatusCode, resp.Header.Get("Allow"), c.allow, resp.Header.Get("Content-Type"))
		}
	}
}

// TestHealthHead: a load balancer's HEAD probe gets the GET's status.
func TestHealthHead(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Head(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: %d", path, resp.StatusCode)
		}
	}
}
