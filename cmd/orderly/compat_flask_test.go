package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// noRedirects is a client that reads a redirect instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// flaskAnswer is what a Flask-routing test reads of an answer.
type flaskAnswer struct {
	code                   int
	allow, ctype, location string
	body                   string
}

// rawCall sends method path with the Authorization header auth ("" for
// none) and reads the answer without following a redirect.
func rawCall(t *testing.T, base, method, path, auth string) flaskAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return flaskAnswer{resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"), resp.Header.Get("Location"), string(b)}
}

// stage0Routing starts orderly with the stage0 surface on and returns it
// with a valid token's Authorization header.
func stage0Routing(t *testing.T) (*secStack, string) {
	t.Helper()
	const secret = "stage0-routing-test-secret-0123456789abcdef"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(runbookDoc("Hello", "{}", "  []", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 60s, host: s0r}
compat:
  stage0: {enabled: true, jwt_secret: %q}
`, dir, secret), nil, "s0r")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s, "Bearer " + tok
}

// TestStage0RoutesAnswerOptions: Flask answered OPTIONS on every route
// itself, in place of the view, and stage0 authenticated in its views:
// so 200 with the route's methods in Allow and no body, with a token or
// without (it was 405). A 405's Allow names OPTIONS too.
func TestStage0RoutesAnswerOptions(t *testing.T) {
	s, auth := stage0Routing(t)
	for path, allow := range map[string]string{
		"/api/runbooks":                       "GET, HEAD, OPTIONS",
		"/api/runbooks/Hello.md":              "GET, HEAD, OPTIONS",
		"/api/runbooks/Nope.md":               "GET, HEAD, OPTIONS", // the route matches; the view would 404
		"/api/runbooks/Hello.md/required-env": "GET, HEAD, OPTIONS",
		"/api/runbooks/Hello.md/validate":     "OPTIONS, PATCH",
		"/api/runbooks/Hello.md/execute":      "OPTIONS, POST",
		"/api/config":                         "GET, HEAD, OPTIONS",
		"/api/nowhere":                        "",
		"/api/shutdown":                       "", // off: not a route
		"/dev-login":                          "", // off: not a route
	} {
		for _, h := range []string{"", auth, "Bearer not-a-token"} {
			a := rawCall(t, s.url, "OPTIONS", path, h)
			switch {
			case allow == "":
				if a.code != 404 {
					t.Errorf("OPTIONS %s (auth %.10q): %d %s, want 404", path, h, a.code, a.body)
				}
			case a.code != 200 || a.allow != allow || a.body != "" || a.ctype != "text/html; charset=utf-8":
				t.Errorf("OPTIONS %s (auth %.10q): %d Allow %q %q %q, want 200 Allow %q, no body", path, h, a.code, a.allow, a.ctype, a.body, allow)
			}
		}
	}
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/api/runbooks/Hello.md", "GET, HEAD, OPTIONS"},
		{"GET", "/api/runbooks/Hello.md/execute", "OPTIONS, POST"},
		{"POST", "/api/runbooks/Hello.md/validate", "OPTIONS, PATCH"},
		{"PUT", "/api/config", "GET, HEAD, OPTIONS"},
	} {
		if a := rawCall(t, s.url, tc.method, tc.path, ""); a.code != 405 || a.allow != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, a.code, a.allow, tc.allow)
		}
	}
}
