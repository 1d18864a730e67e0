package api_test

import (
	"net/http"
	"testing"

	"github.com/orderly-run/orderly/api"
)

// TestAnswersAreNotStoredNorSniffed: every answer of the API's routes and
// of a compat surface says Cache-Control: no-store and
// X-Content-Type-Options: nosniff, refusals and event streams included.
// An order's answer holds its arguments and output as written (no HTML
// escaping): a browser that called the API kept it in its disk cache,
// past the token's life, and nothing told it not to read a JSON answer
// as a page.
func TestAnswersAreNotStoredNorSniffed(t *testing.T) {
	e := newAPIEnv(t, envOptions{compat: []api.CompatSurface{{Prefix: "/api/v1", Handler: named("vigrid")}}})
	o := e.submit("alice", map[string]any{"host": "nowhere-1", "command": "echo", "args": []string{"<script>alert(1)</script>"}}, "", http.StatusAccepted)
	for _, c := range []struct {
		as, method, path string
		want             int
	}{
		{"alice", http.MethodGet, "/v1/orders/" + o.ID.String(), http.StatusOK},
		{"alice", http.MethodGet, "/v1/orders?host=nowhere-1", http.StatusOK},
		{"alice", http.MethodHead, "/v1/orders/" + o.ID.String(), http.StatusOK},
		// An event stream too: it carries the order's output, and a
		// finished order's ends, whole, where a browser's fetch stored
		// it under the no-cache the streams said.
		{"alice", http.MethodHead, "/v1/orders/" + o.ID.String() + "/events", http.StatusOK},
		{"bob", http.MethodGet, "/v1/orders/" + o.ID.String(), http.StatusNotFound},
		{"", http.MethodGet, "/v1/orders/" + o.ID.String(), http.StatusUnauthorized},
		{"alice", http.MethodGet, "/v1/hosts", http.StatusOK},
		{"", http.MethodGet, "/v1/runbooks", http.StatusUnauthorized},
		{"alice", http.MethodGet, "/v1/runbooks", http.StatusNotFound},
		{"", http.MethodGet, "/api/v1/queue", http.StatusOK},
	} {
		code, h, body := e.doHeader(c.as, c.method, c.path, nil)
		if code != c.want {
			t.Errorf("%s %s as %q: %d, want %d: %s", c.method, c.path, c.as, code, c.want, body)
		}
		if cc, ns := h.Get("Cache-Control"), h.Get("X-Content-Type-Options"); cc != "no-store" || ns != "nosniff" {
			t.Errorf("%s %s as %q: Cache-Control %q, X-Content-Type-Options %q; want no-store, nosniff", c.method, c.path, c.as, cc, ns)
		}
	}
}
