package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// sseEvent is one event of a stage0 stream.
type sseEvent struct {
	name, data string
}

// readSSE splits a whole stage0 stream into its events: "event: <name>",
// then "data: " lines joined by newlines.
func readSSE(t *testing.T, body string) []sseEvent {
	t.Helper()
	var out []sseEvent
	for _, block := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		lines := strings.Split(block, "\n")
		name, ok := strings.CutPrefix(lines[0], "event: ")
		if !ok {
			t.Fatalf("event without a name: %q in\n%s", block, body)
		}
		var data []string
		for _, l := range lines[1:] {
			d, ok := strings.CutPrefix(l, "data: ")
			if !ok {
				t.Fatalf("line %q is not data in\n%s", l, body)
			}
			data = append(data, d)
		}
		out = append(out, sseEvent{name, strings.Join(data, "\n")})
	}
	return out
}

// rawRequest writes req as it is to the server at base and reads the
// answer: for header values net/http's client would change.
func rawRequest(t *testing.T, base, req string) (int, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStage0Compat drives the stage0 surface with a plain HTTP client as
// stage0's README does with curl: /dev-login for a token, then list, get,
// required-env, validate and execute with the stream read to its done
// event; runs are orders on real workers, history comes from PostgreSQL.
func TestStage0Compat(t *testing.T) {
	t.Setenv("STAGE0_SVC_NOTE", "from the service")
	const secret = "stage0-compat-test-secret-0123456789abcdef"
	dir := t.TempDir()
	books := map[string]string{
		"Hello.md": runbookDoc("Hello", "GREETING: How to greet\nSTAGE0_SVC_NOTE: Set on the service", "  - suffix.txt", "",
			`echo "$GREETING, world"
cat suffix.txt
echo "note: $STAGE0_SVC_NOTE"
echo "to stderr" >&2
printf 'no newline'`),
		"Ops.md":    runbookDoc("Ops", "{}", "  []", "roles: ops", `echo ops only`),
		"Callee.md": runbookDoc("Callee", "WHO: Who calls", "  []", "", `echo "callee sees $WHO on stack $RUNBOOK_RECURSION_STACK"`),
		"Caller.md": runbookDoc("Caller", "{}", "  []", "",
			`curl -sS -N -X POST "$RUNBOOK_URL/Callee.md/execute" -H "$RUNBOOK_H_AUTH" -H "$RUNBOOK_H_CTYPE" -d '{"env_vars":{"WHO":"caller"}}'`),
		"Recur.md": runbookDoc("Recur", "{}", "  []", "",
			`curl -sS -N -X POST "$RUNBOOK_URL/Recur.md/execute" -H "$RUNBOOK_H_AUTH" -H "$RUNBOOK_H_CTYPE" -d '{}'`),
		"Notes.md": "Just notes, no title line.\n",
	}
	for name, text := range books {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "suffix.txt"), []byte("from an input file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: admin, roles: [admin], hosts: ["*"], allow: [".*"], run_as: ["", "*"]}
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks:
  dir: %q
  timeout: 60s
compat:
  stage0:
    enabled: true
    jwt_secret: %q
    enable_login: true
    hosts: [s0a, s0b]
`, dir, secret), nil, "s0a", "s0b")

	do := func(method, path, token string, body any) (*http.Response, string) {
		t.Helper()
		resp, b := s.send(call{method: method, path: path, token: token, body: body})
		return resp, string(b)
	}
	resp, b := do("POST", "/dev-login", "", map[string]any{"subject": "dev-user", "roles": []string{"developer"}})
	var login struct {
		AccessToken string   `json:"access_token"`
		TokenType   string   `json:"token_type"`
		ExpiresAt   string   `json:"expires_at"`
		Subject     string   `json:"subject"`
		Roles       []string `json:"roles"`
	}
	if err := json.Unmarshal([]byte(b), &login); err != nil || resp.StatusCode != 200 || login.TokenType != "bearer" ||
		login.Subject != "dev-user" || !strings.HasSuffix(login.ExpiresAt, "+00:00") {
		t.Fatalf("dev-login: %d %s", resp.StatusCode, b)
	}
	tok := login.AccessToken

	t.Run("authentication", func(t *testing.T) {
		expired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "iss": "dev-idp", "aud": "dev-api",
			"exp": time.Now().Add(-time.Hour).Unix()}).SignedString([]byte(secret))
		otherAud, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "iss": "dev-idp", "aud": "other"}).
			SignedString([]byte(secret))
		claims := jwt.MapClaims{"sub": "x", "iss": "dev-idp", "aud": "dev-api"}
		algNone, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
		hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, claims).SignedString([]byte(secret))
		noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "dev-idp", "aud": "dev-api"}).
			SignedString([]byte(secret))
		signed := func(c jwt.MapClaims) string {
			c["iss"], c["aud"] = "dev-idp", "dev-api"
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
			return s
		}
		const badSub = `{"error":"Invalid token: The \"sub\" claim must be text of at most 256 bytes without control characters"}`
		const badRoles = `{"error":"Invalid token: The \"roles\" claim must hold roles of at most 256 bytes without control characters"}`
		for _, c := range []struct{ hdr, want string }{
			{"", `{"error":"Missing or invalid Authorization header"}`},
			{"Token " + tok, `{"error":"Missing or invalid Authorization header"}`},
			{"Bearer " + expired, `{"error":"Token has expired"}`},
			{"Bearer " + otherAud, `{"error":"Invalid token: Audience doesn't match"}`},
			// PyJWT refuses an alg outside ["HS256"] before the signature.
			{"Bearer " + algNone, `{"error":"Invalid token: The specified alg value is not allowed"}`},
			{"Bearer " + hs512, `{"error":"Invalid token: The specified alg value is not allowed"}`},
			// orderly needs a principal name (docs/compat.md).
			{"Bearer " + noSub, `{"error":"Invalid token: Token is missing the \"sub\" claim"}`},
			// A principal's name and roles are recorded and logged: what
			// orderly's own tokens may not hold, a stage0 token may not
			// either (a NUL was a 500, a line break a forged log line).
			{"Bearer " + signed(jwt.MapClaims{"sub": "dev\u0000user"}), badSub},
			{"Bearer " + signed(jwt.MapClaims{"sub": "dev-user\nlevel=ERROR msg=forged"}), badSub},
			{"Bearer " + signed(jwt.MapClaims{"sub": strings.Repeat("u", 257)}), badSub},
			{"Bearer " + signed(jwt.MapClaims{"sub": "x", "roles": []string{"developer", "ops\u0000"}}), badRoles},
			{"Bearer " + signed(jwt.MapClaims{"sub": "x", "roles": "developer, o\tps"}), badRoles},
		} {
			resp, b := s.send(call{method: "GET", path: "/api/runbooks", hdr: []string{"Authorization", c.hdr}})
			if resp.StatusCode != 401 || strings.TrimSpace(string(b)) != c.want {
				t.Errorf("%q: %d %s, want %s", c.hdr, resp.StatusCode, b, c.want)
			}
		}
		// "Bearer " with nothing after it is stage0's empty token; sent
		// raw, as Go's client would drop the trailing space itself.
		for _, hdr := range []string{"Bearer ", "Bearer   ", "Bearer"} {
			code, b := rawRequest(t, s.url, "GET /api/runbooks HTTP/1.1\r\nHost: x\r\nAuthorization: "+hdr+"\r\nConnection: close\r\n\r\n")
			if want := `{"error":"Empty token in Authorization header"}`; code != 401 || strings.TrimSpace(b) != want {
				t.Errorf("%q: %d %s, want %s", hdr, code, b, want)
			}
		}
		if resp, b := do("POST", "/api/shutdown", tok, nil); resp.StatusCode != 404 {
			t.Errorf("shutdown is off by default: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("list, get, required-env, config", func(t *testing.T) {
		resp, b := do("GET", "/api/runbooks", tok, nil)
		if resp.StatusCode != 200 || !strings.Contains(b, `{"filename":"Hello.md","name":"Hello","path":"Hello.md"}`) ||
			strings.Contains(b, "Notes.md") {
			t.Fatalf("list: %d %s", resp.StatusCode, b)
		}
		resp, b = do("GET", "/api/runbooks/Hello.md", tok, nil)
		var got struct{ Content string }
		if json.Unmarshal([]byte(b), &got) != nil || resp.StatusCode != 200 || got.Content != books["Hello.md"] {
			t.Fatalf("get: %d %s", resp.StatusCode, b)
		}
		resp, b = do("GET", "/api/runbooks/Nope.md", tok, nil)
		if resp.StatusCode != 404 || strings.TrimSpace(b) != `{"error":"Runbook not found: Nope.md"}` {
			t.Fatalf("missing: %d %s", resp.StatusCode, b)
		}
		resp, b = do("GET", "/api/runbooks/Hello.md/required-env", tok, nil)
		if resp.StatusCode != 200 || !strings.Contains(b, `"available":[{"description":"Set on the service","name":"STAGE0_SVC_NOTE"}]`) ||
			!strings.Contains(b, `"missing":[{"description":"How to greet","name":"GREETING"}]`) {
			t.Fatalf("required-env: %d %s", resp.StatusCode, b)
		}
		resp, b = do("GET", "/api/config", tok, nil)
		if resp.StatusCode != 200 || !strings.Contains(b, `{"from":"environment","name":"JWT_SECRET","value":"secret"}`) ||
			strings.Contains(b, secret) || !strings.Contains(b, `"user_id":"dev-user"`) {
			t.Fatalf("config: %d %s", resp.StatusCode, b)
		}
		// Flask answers HEAD on every GET route, after the same checks.
		for path, want := range map[string]int{"/api/runbooks": 200, "/api/runbooks/Hello.md": 200, "/api/runbooks/Nope.md": 404,
			"/api/runbooks/Hello.md/required-env": 200, "/api/config": 200, "/api/runbooks/Hello.md/validate": 405} {
			resp, b := do("HEAD", path, tok, nil)
			if resp.StatusCode != want || b != "" {
				t.Errorf("HEAD %s: %d %q, want %d and no body", path, resp.StatusCode, b, want)
			}
			if allow := resp.Header.Get("Allow"); want == 405 && allow != "OPTIONS, PATCH" {
				t.Errorf("HEAD %s: 405 with Allow %q, want OPTIONS, PATCH", path, allow)
			}
		}
		if resp, _ := do("HEAD", "/api/runbooks", "", nil); resp.StatusCode != 401 {
			t.Errorf("HEAD without a token: %d, want 401", resp.StatusCode)
		}
	})

	t.Run("validate", func(t *testing.T) {
		resp, b := do("PATCH", "/api/runbooks/Hello.md/validate", tok, nil)
		if resp.StatusCode != 400 || strings.TrimSpace(b) !=
			`{"errors":["Required environment variable not set: GREETING"],"runbook":"Hello.md","success":false,"warnings":[]}` {
			t.Fatalf("invalid: %d %s", resp.StatusCode, b)
		}
		resp, b = do("PATCH", "/api/runbooks/Hello.md/validate", tok, map[string]any{"env_vars": map[string]any{"GREETING": "hi"}})
		if resp.StatusCode != 200 || !strings.Contains(b, `"success":true`) {
			t.Fatalf("valid: %d %s", resp.StatusCode, b)
		}
		// What execute refuses, validate reports (env_deny).
		resp, b = do("PATCH", "/api/runbooks/Hello.md/validate", tok, map[string]any{"env_vars": map[string]any{"GREETING": "hi", "LD_PRELOAD": "/x.so"}})
		if resp.StatusCode != 400 || !strings.Contains(b, `"errors":["environment variable LD_PRELOAD may not be set (env_deny \"LD_*\")"]`) {
			t.Fatalf("refused variable: %d %s", resp.StatusCode, b)
		}
		// A bad name or value is the one error: the variables sent with
		// it are not reported unset.
		for _, c := range []struct {
			vars map[string]any
			want string
		}{
			{map[string]any{"GREETING": "hi", "BAD NAME": "x"}, "Invalid environment variable name: BAD NAME"},
			{map[string]any{"GREETING": "hi", "LIST": []string{"x"}}, "environment variable LIST: the value must be a string, number, boolean or null"},
			{map[string]any{"GREETING": []string{"x"}}, "environment variable GREETING: the value must be a string, number, boolean or null"},
		} {
			resp, b = do("PATCH", "/api/runbooks/Hello.md/validate", tok, map[string]any{"env_vars": c.vars})
			if resp.StatusCode != 400 || !strings.Contains(b, `"errors":[`+strconv.Quote(c.want)+`]`) {
				t.Errorf("validate %v: %d %s, want the one error %q", c.vars, resp.StatusCode, b, c.want)
			}
		}
	})

	t.Run("execute streams every line, then done", func(t *testing.T) {
		resp, b := do("POST", "/api/runbooks/Hello.md/execute", tok, map[string]any{"env_vars": map[string]any{"GREETING": "hello"}})
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
			resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("execute: %d %v %s", resp.StatusCode, resp.Header, b)
		}
		if !strings.Contains(b, "event: stdout\ndata: hello, world\ndata: \n\n") {
			t.Errorf("a line keeps its newline as an empty data line:\n%s", b)
		}
		ev := readSSE(t, b)
		var stdout []string
		for _, e := range ev {
			if e.name == "stdout" {
				stdout = append(stdout, e.data)
			}
		}
		want := []string{"hello, world\n", "from an input file\n", "note: from the service\n", "no newline"}
		if !slices.Equal(stdout, want) {
			t.Errorf("stdout events %q, want %q", stdout, want)
		}
		last := ev[len(ev)-1]
		wantDone := `{"success": true, "runbook": "Hello.md", "return_code": 0, "stdout": "hello, world\nfrom an input file\n` +
			`note: from the service\nno newline", "stderr": "to stderr\n", "errors": [], "warnings": []}`
		if last.name != "done" || last.data != wantDone {
			t.Fatalf("done = %s %s\nwant %s", last.name, last.data, wantDone)
		}
		// History is rendered from PostgreSQL after the file's own text.
		_, b = do("GET", "/api/runbooks/Hello.md", tok, nil)
		var got struct{ Content string }
		_ = json.Unmarshal([]byte(b), &got)
		entry := regexp.MustCompile("\n### \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z \\| Exit Code: 0\n\n\\*\\*Stdout:\\*\\*\n```\nhello, world\n")
		if !strings.HasPrefix(got.Content, books["Hello.md"]) || !entry.MatchString(got.Content) ||
			!strings.Contains(got.Content, "**Stderr:**\n```\nto stderr\n```\n") {
			t.Fatalf("history:\n%s", got.Content)
		}
		// Another principal reads the file but not dev-user's runs, as
		// GET /v1/orders would not show them.
		resp, b = do("POST", "/dev-login", "", map[string]any{"subject": "other-user", "roles": []string{"developer"}})
		var other struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal([]byte(b), &other); err != nil || resp.StatusCode != 200 {
			t.Fatalf("dev-login: %d %s", resp.StatusCode, b)
		}
		_, b = do("GET", "/api/runbooks/Hello.md", other.AccessToken, nil)
		got.Content = ""
		_ = json.Unmarshal([]byte(b), &got)
		if got.Content != books["Hello.md"] {
			t.Fatalf("another principal's view of the history:\n%s", got.Content)
		}
	})

	t.Run("validation failure inside the stream", func(t *testing.T) {
		resp, b := do("POST", "/api/runbooks/Hello.md/execute", tok, map[string]any{"env_vars": map[string]any{"GREETING": "hi", "BAD NAME": "x"}})
		ev := readSSE(t, b)
		if resp.StatusCode != 200 || ev[0].name != "stderr" || ev[0].data != "ERROR: Invalid environment variable name: BAD NAME\n" ||
			!strings.HasPrefix(ev[len(ev)-1].data, `{"success": false, "runbook": "Hello.md", "return_code": 1,`) {
			t.Fatalf("bad env name: %d %s", resp.StatusCode, b)
		}
		for _, vars := range []map[string]any{{"GREETING": "hi", "LIST": []string{"x"}}, {"GREETING": []string{"x"}}} {
			resp, b = do("POST", "/api/runbooks/Hello.md/execute", tok, map[string]any{"env_vars": vars})
			if ev := readSSE(t, b); resp.StatusCode != 200 || len(ev) != 2 || !strings.HasPrefix(ev[0].data, "ERROR: environment variable ") ||
				!strings.HasSuffix(ev[0].data, ": the value must be a string, number, boolean or null\n") {
				t.Errorf("list value %v: %d %s, want its own error, not an unset variable", vars, resp.StatusCode, b)
			}
		}
		resp, b = do("POST", "/api/runbooks/Hello.md/execute", tok, map[string]any{"env_vars": map[string]any{"GREETING": "hi", "LD_PRELOAD": "/x.so"}})
		if ev := readSSE(t, b); resp.StatusCode != 200 || !strings.Contains(ev[len(ev)-1].data, `"errors": ["environment variable LD_PRELOAD may not be set`) {
			t.Fatalf("refused variable: %d %s", resp.StatusCode, b)
		}
		resp, b = do("POST", "/api/runbooks/Hello.md/execute", tok, map[string]any{})
		if ev := readSSE(t, b); resp.StatusCode != 200 || ev[0].data != "Required environment variable not set: GREETING" ||
			!strings.Contains(ev[len(ev)-1].data, `"errors": ["Required environment variable not set: GREETING"]`) {
			t.Fatalf("missing env: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("claims refusal is a 403 and history", func(t *testing.T) {
		resp, b := do("POST", "/api/runbooks/Ops.md/execute", tok, nil)
		const msg = "RBAC check failed for execute. Missing or invalid claims: roles=developer (required: ops)"
		if resp.StatusCode != 403 || strings.TrimSpace(b) != `{"error":"`+msg+`","success":false}` {
			t.Fatalf("ops: %d %s", resp.StatusCode, b)
		}
		_, b = do("GET", "/api/runbooks/Ops.md", tok, nil)
		var got struct{ Content string }
		_ = json.Unmarshal([]byte(b), &got)
		if !strings.Contains(got.Content, "| Exit Code: 403\n\n**Error:**\n```\nRBAC Failure: Access denied for user dev-user. "+msg+"\n```\n") {
			t.Fatalf("history:\n%s", got.Content)
		}
	})

	t.Run("a claim holding NUL is left out, not a 500", func(t *testing.T) {
		nul, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "nul-claim", "iss": "dev-idp", "aud": "dev-api",
			"roles": []string{"developer"}, "team": "a\u0000b", "groups": []string{"x\u0000", "y"},
			"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		resp, b := do("POST", "/api/runbooks/Hello.md/execute", nul, map[string]any{"env_vars": map[string]any{"GREETING": "hi"}})
		if resp.StatusCode != 200 || !strings.Contains(b, `"success": true`) {
			t.Fatalf("execute: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("sub-runbook and recursion through the surface", func(t *testing.T) {
		_, b := do("POST", "/api/runbooks/Caller.md/execute", tok, nil)
		ev := readSSE(t, b)
		done := ev[len(ev)-1].data
		if !strings.HasPrefix(done, `{"success": true, "runbook": "Caller.md", "return_code": 0,`) ||
			!strings.Contains(done, `callee sees caller on stack [\"Caller.md\", \"Callee.md\"]`) ||
			!strings.Contains(done, `event: done`) {
			t.Fatalf("caller: %s", b)
		}
		_, b = do("POST", "/api/runbooks/Recur.md/execute", tok, nil)
		if !strings.Contains(b, `Recursion detected: Runbook Recur.md already in execution chain: ['Recur.md']`) {
			t.Fatalf("recur: %s", b)
		}
	})
}

// TestStage0CompatLimits: a run past runbooks.timeout ends as stage0
// reported it (return code -9 and its note), and lines past the output
// cap are dropped with stage0's warning.
func TestStage0CompatLimits(t *testing.T) {
	const secret = "stage0-compat-test-secret-0123456789abcdef"
	dir := t.TempDir()
	for name, text := range map[string]string{
		"Slow.md":   runbookDoc("Slow", "{}", "  []", "", "echo started\nsleep 30"),
		"Loud.md":   runbookDoc("Loud", "{}", "  []", "", `i=0; while [ $i -lt 300 ]; do echo "line $i of the loud runbook"; i=$((i+1)); done`),
		"Quiet.md":  runbookDoc("Quiet", "{}", "  []", "", "echo quiet"),
		"Silent.md": runbookDoc("Silent", "{}", "  []", "", "sleep 30"),
		"Bytes.md":  runbookDoc("Bytes", "{}", "  []", "", `printf 'a\377\376b\342\202\n'`),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 1s, host: lim}
worker: {max_output_bytes: 2000}
compat:
  stage0: {enabled: true, jwt_secret: %q}
`, dir, secret), nil, "lim")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": "developer, qa",
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	done := func(file string) (string, []sseEvent) {
		t.Helper()
		resp, b := s.send(call{method: "POST", path: "/api/runbooks/" + file + "/execute", token: tok})
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", file, resp.StatusCode, b)
		}
		ev := readSSE(t, string(b))
		return ev[len(ev)-1].data, ev
	}
	// stage0's timeout note is an event of its own, newlines included,
	// even when the script wrote nothing to stderr.
	const timedOut = "\nScript execution timed out after 1 seconds. The script was terminated.\n"
	for _, file := range []string{"Slow.md", "Silent.md"} {
		d, ev := done(file)
		if !strings.Contains(d, `"return_code": -9`) || !strings.Contains(d, `"stderr": "\nScript execution timed out after 1 seconds. The script was terminated.\n"`) ||
			!slices.Contains(ev, sseEvent{"stderr", timedOut}) {
			t.Errorf("%s: events %q", file, ev)
		}
	}
	d, ev := done("Loud.md")
	lines := 0
	loudLine := regexp.MustCompile(`^line [0-9]+ of the loud runbook\n$`)
	for _, e := range ev {
		if e.name == "stdout" {
			lines++
			// Whole lines only: the worker's cap cuts the live stream
			// mid-line, and that fragment is no line of the script.
			if !loudLine.MatchString(e.data) {
				t.Errorf("loud: stdout event %q is not a line the script printed", e.data)
			}
		}
	}
	if lines == 0 || lines >= 300 || !strings.Contains(d, `"stderr": "\n[WARNING: Output truncated due to size limit (2000 bytes)]\n"`) ||
		!strings.Contains(d, `of the loud runbook\n", "stderr"`) {
		t.Errorf("loud: %d lines, done %s", lines, d)
	}
	// Output that is not UTF-8 reads as Python's decode with "replace":
	// one U+FFFD per maximal ill-formed subpart.
	d, ev = done("Bytes.md")
	if ev[0].name != "stdout" || ev[0].data != "a\uFFFD\uFFFDb\uFFFD\n" || !strings.Contains(d, `"stdout": "a\ufffd\ufffdb\ufffd\n"`) {
		t.Errorf("bytes: first event %+v, done %s", ev[0], d)
	}
	// The roles claim as a comma-separated string is split, as stage0 did.
	if d, _ := done("Quiet.md"); !strings.HasPrefix(d, `{"success": true`) {
		t.Errorf("quiet: %s", d)
	}
	// A request past orderly's limits is refused as input, not as a
	// server failure: stage0 had no such limit, so no 500 stands for it.
	resp, b := s.send(call{method: "POST", path: "/api/runbooks/Quiet.md/execute", token: tok,
		body: map[string]any{"env_vars": map[string]any{"LONG": strings.Repeat("x", 9000)}}})
	if resp.StatusCode != 413 || strings.TrimSpace(string(b)) != `{"error":"the value of LONG is longer than 8192 bytes","success":false}` {
		t.Errorf("value past limits.max_env_bytes: %d %s", resp.StatusCode, b)
	}
	// /dev-login is off unless enabled.
	if resp, _ := s.send(call{method: "POST", path: "/dev-login", body: map[string]any{}}); resp.StatusCode != 404 {
		t.Errorf("dev-login off: %d", resp.StatusCode)
	}
}

// TestStage0CompatStreamsBounded: a stage0 execute streams for as long as
// its run lasts, so it counts against limits.max_streams_per_principal
// like a native stream: past it the execute is refused in stage0's shape
// (429, "success": false, Retry-After) before any run is recorded.
func TestStage0CompatStreamsBounded(t *testing.T) {
	const secret = "stage0-compat-test-secret-0123456789abcdef"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Silent.md"), []byte(runbookDoc("Silent", "{}", "  []", "", "sleep 60")), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 90s, host: lim}
limits: {max_streams_per_principal: 1}
compat:
  stage0: {enabled: true, jwt_secret: %q}
`, dir, secret), nil, "lim")
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": "developer",
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", s.url+"/api/runbooks/Silent.md/execute", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body) // until the run ends
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	var running struct {
		Orders []struct {
			ID string `json:"id"`
		} `json:"orders"`
	}
	testenv.WaitUntil(t, 20*time.Second, "the first run running", func() bool {
		_, b := s.send(call{method: "GET", path: "/v1/orders?status=running&host=lim", token: s.token})
		return json.Unmarshal(b, &running) == nil && len(running.Orders) == 1
	})
	resp, b := s.send(call{method: "POST", path: "/api/runbooks/Silent.md/execute", token: tok})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(string(b), `"success":false`) || !strings.Contains(string(b), "too many open streams") {
		t.Fatalf("second execute: %d (Retry-After %q) %s, want 429 in stage0's shape", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	_, b = s.send(call{method: "GET", path: "/v1/orders?host=lim", token: s.token})
	if n := strings.Count(string(b), `"command":"runbook:Silent.md"`); n != 1 {
		t.Errorf("%d runs recorded, want only the first: %s", n, b)
	}
	s.send(call{method: "POST", path: "/v1/orders/" + running.Orders[0].ID + "/cancel", token: s.token, body: map[string]any{"signal": "SIGKILL"}})
	if code := <-first; code != http.StatusOK {
		t.Errorf("first execute: %d", code)
	}
}

// TestStage0CompatCancelsARunItsClientLeft: a stage0 client whose stream
// ends while its run is still queued (here its host has no worker) never
// learns the order's id, so the run is canceled instead of starting when
// the host comes back, for nobody.
func TestStage0CompatCancelsARunItsClientLeft(t *testing.T) {
	const secret = "stage0-compat-test-secret-0123456789abcdef"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Late.md"), []byte(runbookDoc("Late", "{}", "  []", "", "echo late")), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks: {dir: %q, timeout: 60s, host: away}
compat:
  stage0: {enabled: true, jwt_secret: %q}
`, dir, secret), nil) // no worker for away
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": "developer",
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	ctx, leave := context.WithCancel(t.Context())
	defer leave()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/api/runbooks/Late.md/execute", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	var list api.OrderList
	testenv.WaitUntil(t, 20*time.Second, "the run queued", func() bool {
		_, b := s.send(call{method: "GET", path: "/v1/orders?host=away", token: s.token})
		return json.Unmarshal(b, &list) == nil && len(list.Orders) == 1
	})
	leave()
	<-ended
	id := list.Orders[0].ID
	testenv.WaitUntil(t, 20*time.Second, "the run canceled", func() bool {
		return s.count(`SELECT count(*) FROM orders WHERE id = $1 AND status = 'canceled'`, id) == 1
	})
	s.startWorker("away")
	time.Sleep(time.Second)
	if o := s.get(id); o.Status != order.StatusCanceled || o.StartedAt != nil {
		t.Fatalf("with its host back, the run %s started at %v", o.Status, o.StartedAt)
	}
}
