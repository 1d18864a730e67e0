package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMethodNotAllowedSaysWhatIs: a 405 names the methods the route
// serves in Allow (RFC 9110), in orderly's error envelope for the API
// and as an error page for the web UI's pages.
func TestMethodNotAllowedSaysWhatIs(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, c := range []struct{ path, allow, contentType string }{
		{"/v1/orders", "GET, HEAD, POST", "application/json"},
		{"/healthz", "GET, HEAD", "application/json"},
		{"/v1/orders/0193a5e0-0000-7000-8000-000000000000/cancel", "POST", "application/json"},
		{"/ui/signin", "GET, HEAD, POST", "text/html"},
		{"/ui/", "GET, HEAD", "text/html"},
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

// TestUnknownMethodOnUnknownPath: chi calls a method it does not know
// (FOO, PRI) not allowed on any path, so a path nothing serves answered
// 405 with an empty Allow; it is 404 not_found, as for GET, and a routed
// path still answers 405 naming its methods.
func TestUnknownMethodOnUnknownPath(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, c := range []struct {
		method, path, allow string
		status              int
	}{
		{"FOO", "/v1/nope", "", http.StatusNotFound},
		{"PRI", "/nowhere", "", http.StatusNotFound},
		{"FOO", "/v1/orders", "GET, HEAD, POST", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, e.url+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		allow, has := resp.Header["Allow"]
		if resp.StatusCode != c.status || (c.allow == "" && has) || (c.allow != "" && strings.Join(allow, ", ") != c.allow) ||
			!strings.Contains(string(b), `"code":"`) {
			t.Errorf("%s %s: %d, Allow %q %s, want %d with Allow %q", c.method, c.path, resp.StatusCode, allow, b, c.status, c.allow)
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

// TestHeadOnGetRoutes: every GET route answers HEAD with the GET's status
// and headers and no body (RFC 9110 §9.3.2), authentication included; an
// event stream answers at once with its headers instead of streaming
// until the order ends.
func TestHeadOnGetRoutes(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	// No worker serves h-idle: the order stays queued, its stream open.
	o := e.submit("alice", map[string]any{"host": "h-idle", "command": "true"}, "", http.StatusAccepted)
	for _, c := range []struct {
		as, path    string
		status      int
		contentType string
	}{
		{"alice", "/v1/orders", http.StatusOK, "application/json"},
		{"alice", "/v1/orders/" + o.ID.String(), http.StatusOK, "application/json"},
		{"alice", "/v1/orders/" + o.ID.String() + "/events", http.StatusOK, "text/event-stream"},
		{"alice", "/v1/orders/0193a5e0-0000-7000-8000-000000000000", http.StatusNotFound, "application/json"},
		{"", "/v1/orders", http.StatusUnauthorized, "application/json"},
		{"alice", "/v1/hosts", http.StatusOK, "application/json"},
		{"", "/openapi.yaml", http.StatusOK, "application/yaml"},
		{"", "/ui/signin", http.StatusOK, "text/html"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, e.url+c.path, nil)
		if c.as != "" {
			req.Header.Set("Authorization", "Bearer "+e.tokens[c.as])
		}
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			t.Errorf("HEAD %s: %v", c.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) {
			t.Errorf("HEAD %s as %q: %d %s, want %d %s", c.path, c.as, resp.StatusCode, resp.Header.Get("Content-Type"), c.status, c.contentType)
		}
	}
}

// TestNoRouteSaysWhereTo: a newcomer's first wrong paths (the bare root
// a browser opens, a route with a trailing slash, a typo) answer 404
// not_found with what to ask instead, and a 405 names the methods in
// its message as well as in Allow. They answered a bare "no such route"
// and "method not allowed".
func TestNoRouteSaysWhereTo(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, c := range []struct {
		method, path string
		status       int
		want         string
	}{
		{http.MethodGet, "/", http.StatusNotFound, "the web UI is at /ui/"},
		{http.MethodGet, "/v1/orders/", http.StatusNotFound, "/v1/orders/ ends in /; the route is /v1/orders"},
		{http.MethodGet, "/v1/hosts//", http.StatusNotFound, "the route is /v1/hosts"},
		{http.MethodGet, "/v1/order", http.StatusNotFound, "no such route: /v1/order (the API's routes are listed at /docs/"},
		{http.MethodPut, "/v1/orders", http.StatusMethodNotAllowed, "method PUT not allowed on /v1/orders: it takes GET, HEAD, POST"},
	} {
		status, body := e.do("alice", c.method, c.path, nil)
		if status != c.status || !strings.Contains(string(body), c.want) {
			t.Errorf("%s %s: %d %s, want %d saying %q", c.method, c.path, status, body, c.status, c.want)
		}
	}
}
