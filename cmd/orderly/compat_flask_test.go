package main

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// TestStage0RunbookAddressNamesValidateAndExecute: stage0's README shows
// validate as PATCH and execute as POST on the runbook's own address
// (/api/runbooks/<f>), which its server refused (405, Flask's page). A
// client copied from it is told the route it meant, in the 405 stage0's
// routing gives; other methods keep the bare message.
func TestStage0RunbookAddressNamesValidateAndExecute(t *testing.T) {
	s, auth := stage0Routing(t)
	for _, tc := range []struct{ method, path, want string }{
		{"PATCH", "/api/runbooks/Hello.md", `{"error":"Method not allowed: to validate a runbook, send PATCH /api/runbooks/Hello.md/validate"}`},
		{"POST", "/api/runbooks/Hello.md", `{"error":"Method not allowed: to execute a runbook, send POST /api/runbooks/Hello.md/execute"}`},
		{"POST", "/api/runbooks/Hello.md/", `{"error":"Method not allowed: to execute a runbook, send POST /api/runbooks/Hello.md/execute"}`},
		{"DELETE", "/api/runbooks/Hello.md", `{"error":"Method not allowed"}`},
		{"PATCH", "/api/runbooks/Hello.md/required-env", `{"error":"Method not allowed"}`},
		{"POST", "/api/runbooks", `{"error":"Method not allowed"}`},
	} {
		for _, h := range []string{auth, ""} {
			a := rawCall(t, s.url, tc.method, tc.path, h)
			if a.code != 405 || strings.TrimSpace(a.body) != tc.want || a.allow != "GET, HEAD, OPTIONS" {
				t.Errorf("%s %s (auth %.10q): %d Allow %q %s, want 405 %s", tc.method, tc.path, h, a.code, a.allow, a.body, tc.want)
			}
		}
	}
}

// TestStage0JWTAlgorithmIsStage0s: stage0's JWT_ALGORITHM chose the one
// algorithm its tokens were verified with (HS256 by default; HS384 and
// HS512 worked with its one secret). A client whose identity provider
// signs HS512 keeps its tokens with compat.stage0.jwt_algorithm: they
// are accepted, HS256 ones refused with PyJWT's words, /dev-login signs
// with it, and /api/config shows it.
func TestStage0JWTAlgorithmIsStage0s(t *testing.T) {
	const secret = "stage0-algorithm-test-secret-0123456789abcdef"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(runbookDoc("Hello", "{}", "  []", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 60s, host: s0alg}
compat:
  stage0: {enabled: true, jwt_secret: %q, jwt_algorithm: HS512, enable_login: true}
`, dir, secret), nil, "s0alg")
	sign := func(m jwt.SigningMethod) string {
		tok, err := jwt.NewWithClaims(m, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
			"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	if a := rawCall(t, s.url, "GET", "/api/runbooks", sign(jwt.SigningMethodHS512)); a.code != 200 || !strings.Contains(a.body, `"Hello.md"`) {
		t.Errorf("an HS512 token: %d %s, want 200 and the list", a.code, a.body)
	}
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384} {
		if a := rawCall(t, s.url, "GET", "/api/runbooks", sign(m)); a.code != 401 ||
			strings.TrimSpace(a.body) != `{"error":"Invalid token: The specified alg value is not allowed"}` {
			t.Errorf("an %s token: %d %s, want 401 alg not allowed", m.Alg(), a.code, a.body)
		}
	}
	resp, b := s.send(call{method: "POST", path: "/dev-login", body: map[string]any{"roles": []string{"developer"}}})
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &login); err != nil || resp.StatusCode != 200 {
		t.Fatalf("dev-login: %d %s", resp.StatusCode, b)
	}
	tok, _, err := jwt.NewParser().ParseUnverified(login.AccessToken, jwt.MapClaims{})
	if err != nil || tok.Header["alg"] != "HS512" {
		t.Errorf("dev-login's token: alg %v (%v), want HS512", tok.Header["alg"], err)
	}
	a := rawCall(t, s.url, "GET", "/api/config", "Bearer "+login.AccessToken)
	if a.code != 200 || !strings.Contains(a.body, `{"from":"environment","name":"JWT_ALGORITHM","value":"HS512"}`) {
		t.Errorf("/api/config with dev-login's token: %d %s, want JWT_ALGORITHM HS512 from the environment", a.code, a.body)
	}
}

// wantRedirect checks Werkzeug's answer to a path whose slashes merge
// into a route: 308 to the merged path on the same host, query kept, and
// its HTML page naming the target.
func wantRedirect(t *testing.T, what string, a flaskAnswer, location string) {
	t.Helper()
	page := `redirected automatically to the target URL: <a href="` + html.EscapeString(location) + `">`
	if a.code != 308 || a.location != location || a.ctype != "text/html; charset=utf-8" ||
		!strings.HasPrefix(what, "HEAD ") && !strings.Contains(a.body, page) {
		t.Errorf("%s: %d Location %q %q %q, want 308 to %q", what, a.code, a.location, a.ctype, a.body, location)
	}
}

// TestStage0MergedSlashesRedirect: Werkzeug merged doubled slashes and
// redirected (308) to the path they made, when it was a route and took
// the method; before stage0's views, so with or without a token. The
// surface answered such a path 404.
func TestStage0MergedSlashesRedirect(t *testing.T) {
	s, auth := stage0Routing(t)
	host := strings.TrimPrefix(s.url, "http://")
	for _, h := range []string{"", auth} {
		for _, tc := range []struct{ method, path, to string }{
			{"GET", "/api//runbooks", "/api/runbooks"},
			{"GET", "/api/runbooks//Hello.md?x=1&y=%20", "/api/runbooks/Hello.md?x=1&y=%20"},
			{"HEAD", "/api/runbooks///Hello.md", "/api/runbooks/Hello.md"},
			{"OPTIONS", "/api//config", "/api/config"},
			{"POST", "/api/runbooks/Hello.md//execute", "/api/runbooks/Hello.md/execute"},
			{"PATCH", "/api//runbooks//Hello.md//validate", "/api/runbooks/Hello.md/validate"},
			{"GET", "/api/runbooks//a%20%C3%A4'%22%3C.md", "/api/runbooks/a%20%C3%A4'%22%3C.md"},
			// gunicorn kept leading slashes; Werkzeug merged them too.
			{"GET", "//api/runbooks", "/api/runbooks"},
		} {
			wantRedirect(t, fmt.Sprintf("%s %s (auth %t)", tc.method, tc.path, h != ""), rawCall(t, s.url, tc.method, tc.path, h), "http://"+host+tc.to)
		}
		// The merged path must take the method, and be a route.
		if a := rawCall(t, s.url, "POST", "/api//runbooks", h); a.code != 405 || a.allow != "GET, HEAD, OPTIONS" {
			t.Errorf("POST /api//runbooks: %d Allow %q, want 405", a.code, a.allow)
		}
		if a := rawCall(t, s.url, "GET", "/api//nowhere", h); a.code != 404 {
			t.Errorf("GET /api//nowhere: %d, want 404", a.code)
		}
	}
	// Followed, the redirect reaches the route.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/api//runbooks", nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"Hello.md"`) {
		t.Errorf("GET /api//runbooks followed: %d %s", resp.StatusCode, b)
	}
}

// TestVigridMergedSlashesRedirect: Werkzeug's redirect of doubled slashes
// came after Vigrid's checks (they ran in before_request, routing after),
// so a client without a token got 401; with one, 308 to the merged path.
// The surface served such a path as if its slashes were single.
func TestVigridMergedSlashesRedirect(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	host := strings.TrimPrefix(s.url, "http://")
	for _, tc := range []struct{ method, path, to string }{
		{"GET", "/api/v1//status", "/api/v1/status"},
		{"GET", "/api/v1///queue?x=1", "/api/v1/queue?x=1"},
		{"GET", "/api/v1//health", "/api/v1/health"},
		{"HEAD", "/api/v1//status", "/api/v1/status"},
		{"OPTIONS", "/api/v1//execute", "/api/v1/execute"},
		{"POST", "/api/v1//kill", "/api/v1/kill"},
		{"POST", "/api//v1/execute", "/api/v1/execute"},
	} {
		if a := rawCall(t, s.url, tc.method, tc.path, ""); a.code != 401 {
			t.Errorf("%s %s without a token: %d %s, want 401", tc.method, tc.path, a.code, a.body)
		}
		wantRedirect(t, tc.method+" "+tc.path, rawCall(t, s.url, tc.method, tc.path, bearer("ops")), "http://"+host+tc.to)
	}
	// Werkzeug's server read leading slashes as one, and served the path.
	for _, path := range []string{"//api/v1/status", "///api/v1/queue"} {
		if a := rawCall(t, s.url, "GET", path, bearer("ops")); a.code != 200 || !strings.Contains(a.body, `"status":"ok"`) {
			t.Errorf("GET %s: %d %s, want 200", path, a.code, a.body)
		}
		if a := rawCall(t, s.url, "GET", path, ""); a.code != 401 {
			t.Errorf("GET %s without a token: %d %s, want 401", path, a.code, a.body)
		}
	}
	if a := rawCall(t, s.url, "GET", "//api/v1/health", ""); a.code != 200 {
		t.Errorf("GET //api/v1/health: %d %s, want 200", a.code, a.body)
	}
	if a := rawCall(t, s.url, "GET", "/api/v1//kill", bearer("ops")); a.code != 405 || a.allow != "OPTIONS, POST" {
		t.Errorf("GET /api/v1//kill: %d Allow %q, want 405", a.code, a.allow)
	}
	if a := rawCall(t, s.url, "GET", "/api/v1//nowhere", bearer("ops")); a.code != 404 || !strings.Contains(a.body, "Endpoint not found") {
		t.Errorf("GET /api/v1//nowhere: %d %s, want 404", a.code, a.body)
	}
	// Nothing ran: the kill above was a redirect, not a kill.
	c := newVigridClient(t, s)
	if code, m, _ := c.call("GET", "/api/v1/status", bearer("ops"), nil); code != 200 || m["current_order"] != nil {
		t.Fatalf("status: %d %v", code, m)
	}
}
