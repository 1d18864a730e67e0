package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/postgres"
)

// vigridSecrets are the sample config's bearer tokens.
var vigridSecrets = map[string]string{
	"ops": "ops-Secret-Token-0001", "monitor": "monitor-Secret-0002", "ghost": "ghost-Secret-0003", "limited": "limited-Secret-0004",
}

// vigridSample is a Vigrid Shell API config as its users have them. Its
// command_path is a directory of harmless stand-ins only (a "shutdown"
// that prints), never /sbin or /usr/sbin.
func vigridSample(bin string, dryRun bool) string {
	return fmt.Sprintf(`bind: "0.0.0.0"
port: 8555
ssl:
  enabled: false
run_as: "root"
dry_run: %t
command_path: "%s"
forbidden_chars:
  - '"'
  - "'"
  - ";"
  - "\\"
  - "|"
  - "&"
  - "("
  - ")"
  - "{"
  - "}"
  - "$"
  - "`+"`"+`"
log_dir: "/var/log"
log_format: "json"
log_level: "WARNING"
acl:
  deny:
    - "127.0.0.2/32"
  allow:
    - "127.0.0.0/8"
tokens:
  ops:
    secret: "%s"
    user: "root"
    allow_commands: [".*"]
    deny_commands: ["^shutdown", "^reboot"]
  monitor:
    secret: "%s"
    user: "nobody"
    allow_commands: ["^echo"]
  ghost:
    secret: "%s"
    user: "orderly-no-such-user"
    allow_commands: ["^echo"]
  limited:
    secret: "%s"
    allow_commands: ["^echo", "^sleep"]
`, dryRun, bin, vigridSecrets["ops"], vigridSecrets["monitor"], vigridSecrets["ghost"], vigridSecrets["limited"])
}

// vigridBin is the command_path of the sample: copies of echo, cat and
// sleep, and a stand-in named shutdown that only prints.
func vigridBin(t *testing.T) string {
	t.Helper()
	bin, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"echo", "cat", "sleep"} {
		copyTool(t, name, filepath.Join(bin, name))
	}
	if err := os.WriteFile(filepath.Join(bin, "shutdown"), []byte("#!/bin/sh\necho pretend\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "badinterp"), []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "notexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "errout"), []byte("#!/bin/sh\necho to-err >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// vigridStack imports the sample with `orderly import vigrid` and starts
// orderly on the result, with a worker for host vx.
func vigridStack(t *testing.T, dryRun bool, overrides map[string]any) (*secStack, string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "vigrid-shell-api.conf")
	bin := vigridBin(t)
	if err := os.WriteFile(src, []byte(vigridSample(bin, dryRun)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"orderly", "import", "vigrid", "--host", "vx", src}, nil, strings.NewReader(""), &out, &errb); err != nil {
		t.Fatalf("import vigrid: %v: %s", err, errb.String())
	}
	for name, secret := range vigridSecrets {
		if strings.Contains(out.String()+errb.String(), secret) {
			t.Fatalf("import printed the secret of token %s", name)
		}
	}
	if !strings.Contains(errb.String(), "not mapped: log_dir") {
		t.Fatalf("import did not report the unmapped log_dir: %q", errb.String())
	}
	ov := map[string]any{"log.format": "text", "log.level": "warn", "config_check_interval": "100ms"}
	for k, v := range overrides {
		ov[k] = v
	}
	return newSecStack(t, out.String(), ov, "vx"), bin
}

// vigridClient is a plain HTTP client speaking the Vigrid protocol.
type vigridClient struct {
	t      *testing.T
	base   string
	client *http.Client
}

func newVigridClient(t *testing.T, s *secStack) *vigridClient {
	return &vigridClient{t: t, base: s.url, client: http.DefaultClient}
}

// from returns a client whose connections come from local address ip.
func (c *vigridClient) from(ip string) *vigridClient {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &vigridClient{t: c.t, base: c.base, client: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}}
}

// call sends a request; auth is the whole Authorization header ("" for
// none); body is sent as is when a string, else as JSON.
func (c *vigridClient) call(method, path, auth string, body any) (int, map[string]any, string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, requestBody(c.t, body))
	if err != nil {
		c.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		c.t.Fatalf("%s %s: body is not JSON: %d %s", method, path, resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		c.t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, m, string(raw)
}

func bearer(token string) string { return "Bearer " + vigridSecrets[token] }

// wantVigridError checks a {"status":"error","message":...} answer.
func wantVigridError(t *testing.T, what string, code int, m map[string]any, wantCode int, wantMsg string) {
	t.Helper()
	if code != wantCode || m["status"] != "error" || m["message"] != wantMsg || len(m) != 2 {
		t.Errorf("%s: %d %v, want %d {status: error, message: %q}", what, code, m, wantCode, wantMsg)
	}
}

var vigridTS = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

// TestVigridImportAndRun converts a sample Vigrid config with `orderly
// import vigrid` (no secret printed, unmapped keys reported) and runs a
// Vigrid client against the result: health, status, sync and async
// execute, Python str() of arguments, truthiness of synchronous.
func TestVigridImportAndRun(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	c := newVigridClient(t, s)

	code, m, _ := c.call("GET", "/api/v1/health", "", nil)
	if code != 200 || m["status"] != "ok" || m["service"] != "vigrid-shell-api" || m["version"] != "1.0.0" || !vigridTS.MatchString(m["timestamp"].(string)) {
		t.Fatalf("health = %d %v", code, m)
	}
	code, m, _ = c.call("GET", "/api/v1/status", bearer("ops"), nil)
	if code != 200 || m["dry_run"] != false || m["queue_depth"] != float64(0) || m["current_order"] != nil || m["service"] != "vigrid-shell-api" {
		t.Fatalf("status = %d %v", code, m)
	}

	code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": " echo ", "arguments": []any{"a b", 1, true, nil}, "synchronous": true})
	res, _ := m["result"].(map[string]any)
	if code != 200 || m["status"] != "ok" || res == nil || res["stdout"] != "a b 1 True None\n" || res["stderr"] != "" || res["return_code"] != float64(0) || res["dry_run"] != false {
		t.Fatalf("sync execute = %d %s", code, raw)
	}
	if _, err := uuid.Parse(m["order_id"].(string)); err != nil {
		t.Fatalf("order_id %v", m["order_id"])
	}
	code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "errout", "synchronous": "false"})
	res, _ = m["result"].(map[string]any)
	if code != 200 || res == nil || res["stderr"] != "to-err\n" || res["return_code"] != float64(3) {
		t.Fatalf(`"synchronous": "false" is truthy, so a sync execute: %d %s`, code, raw)
	}

	// A command that cannot be spawned: return_code -1 and the reason.
	code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "badinterp", "synchronous": true})
	res, _ = m["result"].(map[string]any)
	if code != 200 || res == nil || res["return_code"] != float64(-1) || res["stderr"] == "" {
		t.Fatalf("spawn failure = %d %s", code, raw)
	}

	// A timeout that is not a number failed Vigrid's run; it is 400 here
	// (TestVigridTimeoutNotANumber).
	if code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "synchronous": true, "timeout": "soon"}); code != 400 {
		t.Fatalf("timeout \"soon\" = %d %s", code, raw)
	}

	code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"async"}})
	if code != 202 || m["status"] != "ok" || m["message"] != "Command queued for execution" || len(m) != 3 {
		t.Fatalf("async execute = %d %s", code, raw)
	}
	// It is an ordinary order of principal ops, and it runs.
	id := uuid.MustParse(m["order_id"].(string))
	o := s.waitFor(id, 30*time.Second, terminal)
	if o.Principal != "ops" || o.Source != "vigrid" || o.Status != "succeeded" || o.RunAs != "root" {
		t.Fatalf("async order = %+v", o)
	}
	// It named no timeout, which Vigrid ran until it ended: the import's
	// limits.default_timeout is the longest an order may have, not
	// orderly's 60s, which killed every longer command of such a client.
	if o.TimeoutSecs != (24 * time.Hour).Seconds() {
		t.Fatalf("async execute without a timeout: the order's timeout is %vs, want 86400 (the import's limits.default_timeout: 24h)", o.TimeoutSecs)
	}
	// The body is JSON whatever the Content-Type says.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", s.url+"/api/v1/execute", strings.NewReader(`{"command":"echo","synchronous":1}`))
	req.Header.Set("Authorization", bearer("ops"))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("text/plain execute = %d", resp.StatusCode)
	}
}

// TestVigridAuthPipeline: ACL, then the Bearer scheme, then the token,
// then routing; health skips the token but not the ACL.
func TestVigridAuthPipeline(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	c := newVigridClient(t, s)
	denied := c.from("127.0.0.2")

	code, m, _ := denied.call("GET", "/api/v1/health", "", nil)
	wantVigridError(t, "health from a denied address", code, m, 403, "Access denied")
	code, m, _ = denied.call("GET", "/api/v1/status", bearer("ops"), nil)
	wantVigridError(t, "status from a denied address", code, m, 403, "Access denied")
	code, m, _ = denied.call("GET", "/api/v1/nowhere", "", nil)
	wantVigridError(t, "ACL before auth and routing", code, m, 403, "Access denied")

	// The ACL judges the socket peer; X-Forwarded-For is not believed
	// without acl.trusted_proxies.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/api/v1/status", nil)
	req.Header.Set("Authorization", bearer("ops"))
	req.Header.Set("X-Forwarded-For", "127.0.0.2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("X-Forwarded-For of a denied address changed the verdict: %d", resp.StatusCode)
	}

	authRequired := "Authentication required. Use 'Authorization: Bearer <token>'."
	for _, h := range []string{"", "bearer " + vigridSecrets["ops"], "Token " + vigridSecrets["ops"], "Bearer"} {
		code, m, _ = c.call("GET", "/api/v1/status", h, nil)
		wantVigridError(t, fmt.Sprintf("Authorization %q", h), code, m, 401, authRequired)
	}
	// header[7:] is compared as it is: spaces inside the value are part of
	// the token (Go's client and server trim only the ends of the value).
	for _, h := range []string{"Bearer wrong", "Bearer " + vigridSecrets["ops"] + "x", "Bearer  " + vigridSecrets["ops"],
		"Bearer \t" + vigridSecrets["ops"]} {
		code, m, _ = c.call("GET", "/api/v1/status", h, nil)
		wantVigridError(t, fmt.Sprintf("Authorization %q", h), code, m, 401, "Invalid authentication token")
	}
	code, m, _ = c.call("GET", "/api/v1/nowhere", "", nil)
	wantVigridError(t, "unknown path without a token", code, m, 401, authRequired)
	code, m, _ = c.call("GET", "/api/v1/nowhere", bearer("ops"), nil)
	wantVigridError(t, "unknown path", code, m, 404, "Endpoint not found")
	code, m, _ = c.call("GET", "/api/v1/execute", bearer("ops"), nil)
	wantVigridError(t, "GET execute", code, m, 405, "Method not allowed")
	code, m, _ = c.call("POST", "/api/v1/status", bearer("ops"), "{}")
	wantVigridError(t, "POST status", code, m, 405, "Method not allowed")

	// Flask answers HEAD on every GET route, after the same checks.
	for path, want := range map[string]int{"/api/v1/health": 200, "/api/v1/status": 200, "/api/v1/queue": 200, "/api/v1/execute": 405} {
		for auth, code := range map[string]int{bearer("ops"): want, "": 401} {
			if path == "/api/v1/health" {
				code = want
			}
			req, _ := http.NewRequestWithContext(t.Context(), "HEAD", s.url+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != code || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("HEAD %s (token %t): %d %q, want %d", path, auth != "", resp.StatusCode, resp.Header.Get("Content-Type"), code)
			}
			if allow := resp.Header.Get("Allow"); code == 405 && allow != "OPTIONS, POST" {
				t.Errorf("HEAD %s: 405 with Allow %q, want OPTIONS, POST", path, allow)
			}
		}
	}
	// Flask answered OPTIONS on every route, after the same checks: 200,
	// no body, the route's methods in Allow (it was 405).
	for path, allow := range map[string]string{"/api/v1/health": "GET, HEAD, OPTIONS", "/api/v1/status": "GET, HEAD, OPTIONS",
		"/api/v1/execute": "OPTIONS, POST", "/api/v1/kill": "OPTIONS, POST", "/api/v1/nowhere": ""} {
		for _, auth := range []string{bearer("ops"), ""} {
			req, _ := http.NewRequestWithContext(t.Context(), "OPTIONS", s.url+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, gotAllow := resp.StatusCode, resp.Header.Get("Allow")
			switch {
			case auth == "" && path != "/api/v1/health":
				if code != 401 {
					t.Errorf("OPTIONS %s without a token: %d, want 401", path, code)
				}
			case allow == "":
				if code != 404 || !strings.Contains(string(body), "Endpoint not found") {
					t.Errorf("OPTIONS %s: %d %s, want 404 Endpoint not found", path, code, body)
				}
			case code != 200 || gotAllow != allow || len(body) != 0:
				t.Errorf("OPTIONS %s (token %t): %d Allow %q %q, want 200 Allow %q and no body", path, auth != "", code, gotAllow, body, allow)
			}
		}
	}
}

// TestVigridExecuteChecks: each refusal in Vigrid's order, first failure
// wins: body, forbidden characters (before authorization), deny then
// allow (before resolution), resolution, the user.
func TestVigridExecuteChecks(t *testing.T) {
	s, bin := vigridStack(t, false, nil)
	c := newVigridClient(t, s)
	cases := []struct {
		name, token string
		body        any
		code        int
		msg         string
	}{
		{"invalid JSON", "ops", `{"command":`, 400, "Invalid JSON body"},
		// A body that is not an object has no command to run, falsy or not
		// (docs/decisions.md, eleventh round).
		{"body null", "ops", `null`, 400, "Invalid JSON body"},
		{"body []", "ops", `[]`, 400, "Invalid JSON body"},
		{"body 0", "ops", `0`, 400, "Invalid JSON body"},
		{`body ""`, "ops", `""`, 400, "Invalid JSON body"},
		{"body false", "ops", `false`, 400, "Invalid JSON body"},
		{"body a list", "ops", `["echo"]`, 400, "Invalid JSON body"},
		{"no body", "ops", ``, 400, "Invalid JSON body"},
		{"body past http.max_body_bytes", "ops", `{"command": "echo", "arguments": ["` + strings.Repeat("x", 1<<20) + `"]}`, 413, "Request body too large"},
		{"missing command", "ops", map[string]any{"arguments": []string{}}, 400, "Missing 'command' field"},
		{"command spelled COMMAND", "ops", map[string]any{"COMMAND": "echo", "synchronous": true}, 400, "Missing 'command' field"},
		{"arguments not a list", "ops", map[string]any{"command": "echo", "arguments": "x"}, 400, "'arguments' must be a list"},
		{"arguments null", "ops", map[string]any{"command": "echo", "arguments": nil}, 400, "'arguments' must be a list"},
		{"forbidden char", "ops", map[string]any{"command": "echo", "arguments": []string{"ok", "a|b", "c;d"}}, 400, "Forbidden character in argument: '|'"},
		{"forbidden before deny", "ops", map[string]any{"command": "shutdown", "arguments": []string{"a;b"}}, 400, "Forbidden character in argument: ';'"},
		{"command name not checked", "ops", map[string]any{"command": "no;such", "synchronous": true}, 404, "Command 'no;such' not found"},
		{"deny", "ops", map[string]any{"command": "shutdown", "arguments": []string{"-h", "now"}}, 403, "Command not authorized: Command matches deny pattern: ^shutdown"},
		{"deny before resolution", "ops", map[string]any{"command": "reboot"}, 403, "Command not authorized: Command matches deny pattern: ^reboot"},
		{"no allow", "limited", map[string]any{"command": "cat"}, 403, "Command not authorized: Command does not match any allow pattern"},
		{"not found", "ops", map[string]any{"command": "nosuch"}, 404, "Command 'nosuch' not found"},
		{"command stripped as str.strip()", "ops", map[string]any{"command": "\x1cnosuch\u00a0\x1f"}, 404, "Command 'nosuch' not found"},
		{"not a string, str()'d", "ops", map[string]any{"command": []any{"echo"}}, 404, "Command '['echo']' not found"},
		{"argument str()'d with a quote", "ops", map[string]any{"command": "echo", "arguments": []any{[]any{1, "a"}}}, 400, "Forbidden character in argument: '" + "'" + "'"},
		{"absolute not executable", "ops", map[string]any{"command": filepath.Join(bin, "notexec")}, 404, "Command '" + filepath.Join(bin, "notexec") + "' not found"},
		{"disabled shell", "monitor", map[string]any{"command": "echo"}, 403, "User 'nobody' has a disabled shell: " + loginShellOf(t, "nobody")},
		{"no such user", "ghost", map[string]any{"command": "echo"}, 403, "User 'orderly-no-such-user' does not exist on this system"},
	}
	for _, tc := range cases {
		code, m, _ := c.call("POST", "/api/v1/execute", bearer(tc.token), tc.body)
		wantVigridError(t, tc.name, code, m, tc.code, tc.msg)
	}
	code, m, _ := c.call("POST", "/api/v1/kill", bearer("ops"), `{"signal": "`+strings.Repeat("x", 1<<20)+`"}`)
	wantVigridError(t, "kill past http.max_body_bytes", code, m, 413, "Request body too large")
	// A falsy kill body names no signal: SIGTERM, to nothing running here.
	for _, body := range []string{"null", "[]", "0", `""`, "false"} {
		if code, m, _ := c.call("POST", "/api/v1/kill", bearer("ops"), body); code != 200 || m["message"] != "No command is currently running" {
			t.Errorf("kill with body %s = %d %v, want 200 No command is currently running", body, code, m)
		}
	}
	code, m, _ = c.call("POST", "/api/v1/kill", bearer("ops"), `["SIGKILL"]`)
	wantVigridError(t, "kill with a list body", code, m, 400, "Invalid JSON body")
	// Nothing refused became an order.
	code, m, _ = c.call("GET", "/api/v1/queue", bearer("ops"), nil)
	if code != 200 || m["queue_size"] != float64(0) {
		t.Fatalf("queue after refusals = %d %v", code, m)
	}
}

// loginShellOf is user's shell in /etc/passwd; the test needs nobody's to
// be disabled, as on every Debian and Ubuntu.
func loginShellOf(t *testing.T, user string) string {
	t.Helper()
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[0] == user {
			if !strings.HasSuffix(f[6], "nologin") && !strings.HasSuffix(f[6], "false") {
				t.Fatalf("%s has shell %s here; the test needs a disabled one", user, f[6])
			}
			return f[6]
		}
	}
	t.Fatalf("no user %s", user)
	return ""
}

// syncResult runs a sync execute in the background and delivers its body.
func (c *vigridClient) syncResult(token string, body map[string]any) <-chan map[string]any {
	ch := make(chan map[string]any, 1)
	body["synchronous"] = true
	go func() {
		j, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(c.t.Context(), "POST", c.base+"/api/v1/execute", bytes.NewReader(j))
		req.Header.Set("Authorization", bearer(token))
		resp, err := c.client.Do(req)
		if err != nil {
			ch <- map[string]any{"error": err.Error()}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		m["http_status"] = float64(resp.StatusCode)
		ch <- m
	}()
	return ch
}

// waitQueue polls /queue until cond holds.
func (c *vigridClient) waitQueue(token string, cond func([]map[string]any) bool) []map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, m, raw := c.call("GET", "/api/v1/queue", bearer(token), nil)
		if code != 200 {
			c.t.Fatalf("queue = %d %s", code, raw)
		}
		var list []map[string]any
		for _, o := range m["orders"].([]any) {
			list = append(list, o.(map[string]any))
		}
		if int(m["queue_size"].(float64)) != len(list) {
			c.t.Fatalf("queue_size %v != %d orders", m["queue_size"], len(list))
		}
		if cond(list) {
			return list
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("queue never reached the expected state: %s", raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestVigridKillNamesTheProcess: a kill that comes after an order shows as
// running (its claim) but before its worker recorded the process it
// started answers with that process's pid once recorded, not "PID 0" (a
// full test run met that: the kill came 8 ms after the start). The
// worker is stopped and the test claims and records in its place, so the
// window lasts as long as it needs; pid 4242 is a record only, never
// signalled (no worker runs the order).
func TestVigridKillNamesTheProcess(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	s.stopWorker("vx")
	c := newVigridClient(t, s)
	code, a, _ := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "sleep", "arguments": []string{"60"}})
	if code != 202 && code != 200 {
		t.Fatalf("execute = %d %v", code, a)
	}
	id := uuid.MustParse(a["order_id"].(string))
	ctx := ctxT(t)
	me := postgres.Owner{Instance: "vx/kill-test"}
	if _, _, err := s.b.store.TakeHost(ctx, "vx", "test", me); err != nil {
		t.Fatal(err)
	}
	o, claimed, err := s.b.store.Claim(ctx, id, me.Instance, 1)
	if err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	recorded := make(chan error, 1)
	time.AfterFunc(300*time.Millisecond, func() {
		recorded <- s.b.store.RecordProcess(ctx, id, o.Attempt, me.Instance, postgres.Process{
			PID: 4242, PGID: 4242, StartTime: 1, BootID: "boot", MachineID: "machine", PidNS: 1})
	})
	// No worker beats for vx (the stopped one's heartbeat may still be
	// fresh): "sent" while it is, "recorded, not sent" once it is not.
	code, m, _ := c.call("POST", "/api/v1/kill", bearer("ops"), nil)
	if !(code == 200 && m["message"] == "Signal SIGTERM sent to PID 4242" ||
		code == 202 && strings.HasPrefix(fmt.Sprint(m["message"]), "Signal SIGTERM recorded for PID 4242, not sent: the worker of host vx is offline")) {
		t.Fatalf("kill = %d %v", code, m)
	}
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}
}

// TestVigridQueueKillFIFO: one FIFO for sync and async alike; /queue
// shows the running order and the queued ones in order with Vigrid's
// fields; /kill signals only the running command (its whole group), and
// a killed sync caller gets -signum.
func TestVigridQueueKillFIFO(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	c := newVigridClient(t, s)

	code, m, _ := c.call("POST", "/api/v1/kill", bearer("ops"), "{}")
	if code != 200 || m["message"] != "No command is currently running" {
		t.Fatalf("idle kill = %d %v", code, m)
	}
	code, m, _ = c.call("POST", "/api/v1/kill", bearer("ops"), map[string]any{"signal": "SIGSTOP"})
	wantVigridError(t, "unsupported signal", code, m, 400, "Unsupported signal: SIGSTOP. Supported: SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1, SIGUSR2")

	_, a, _ := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "sleep", "arguments": []string{"60"}})
	_, b, _ := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"b"}})
	syncC := c.syncResult("ops", map[string]any{"command": "echo", "arguments": []string{"c"}})
	list := c.waitQueue("ops", func(l []map[string]any) bool { return len(l) == 3 && l[0]["status"] == "running" })
	if list[0]["order_id"] != a["order_id"] || list[1]["order_id"] != b["order_id"] || list[1]["status"] != "queued" || list[2]["status"] != "queued" {
		t.Fatalf("queue order = %v", list)
	}
	first := list[0]
	if first["command"] != "sleep" || fmt.Sprint(first["arguments"]) != "[60]" || first["token_name"] != "ops" ||
		first["client_ip"] != "127.0.0.1" || first["synchronous"] != false || !vigridTS.MatchString(first["queued_at"].(string)) ||
		!vigridTS.MatchString(first["started_at"].(string)) || list[1]["started_at"] != nil || list[2]["synchronous"] != true {
		t.Fatalf("queue entries = %v", list)
	}
	code, m, _ = c.call("GET", "/api/v1/status", bearer("ops"), nil)
	cur, _ := m["current_order"].(map[string]any)
	if code != 200 || m["queue_depth"] != float64(2) || cur == nil || cur["order_id"] != a["order_id"] || cur["command"] != "sleep" {
		t.Fatalf("status while busy = %d %v", code, m)
	}

	// Another token sees none of ops's orders and cannot kill them.
	code, m, _ = c.call("GET", "/api/v1/queue", bearer("limited"), nil)
	if code != 200 || m["queue_size"] != float64(0) {
		t.Fatalf("queue of another token = %d %v", code, m)
	}
	code, m, _ = c.call("POST", "/api/v1/kill", bearer("limited"), nil)
	if code != 200 || m["message"] != "No command is currently running" {
		t.Fatalf("kill by another token = %d %v", code, m)
	}
	code, m, _ = c.call("POST", "/api/v1/kill", bearer("ops"), map[string]any{"signal": "sigterm"})
	if code != 200 || !regexp.MustCompile(`^Signal SIGTERM sent to PID [1-9][0-9]*$`).MatchString(fmt.Sprint(m["message"])) {
		t.Fatalf("kill = %d %v", code, m)
	}
	var cid string
	select {
	case got := <-syncC:
		res, _ := got["result"].(map[string]any)
		if got["http_status"] != float64(200) || res == nil || res["stdout"] != "c\n" || res["return_code"] != float64(0) {
			t.Fatalf("sync C = %v", got)
		}
		cid, _ = got["order_id"].(string)
	case <-time.After(30 * time.Second):
		t.Fatal("sync C never answered")
	}
	oa := s.waitFor(uuid.MustParse(a["order_id"].(string)), 10*time.Second, terminal)
	ob := s.waitFor(uuid.MustParse(b["order_id"].(string)), 10*time.Second, terminal)
	oc := s.waitFor(uuid.MustParse(cid), 10*time.Second, terminal)
	if oa.Status != "killed" || ob.Status != "succeeded" || ob.StartedAt.Before(*oa.FinishedAt) || oc.StartedAt.Before(*ob.FinishedAt) {
		t.Fatalf("FIFO: A %s (finished %v), B %s (%v-%v), C started %v", oa.Status, oa.FinishedAt, ob.Status, ob.StartedAt, ob.FinishedAt, oc.StartedAt)
	}

	// A killed sync caller gets minus the signal's number.
	syncD := c.syncResult("ops", map[string]any{"command": "sleep", "arguments": []string{"60"}})
	c.waitQueue("ops", func(l []map[string]any) bool { return len(l) == 1 && l[0]["status"] == "running" })
	if code, m, _ = c.call("POST", "/api/v1/kill", bearer("ops"), map[string]any{"signal": "SIGKILL"}); code != 200 {
		t.Fatalf("kill D = %d %v", code, m)
	}
	select {
	case got := <-syncD:
		res, _ := got["result"].(map[string]any)
		if res == nil || res["return_code"] != float64(-9) {
			t.Fatalf("killed sync D = %v", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sync D never answered")
	}
}

// TestVigridTimeout: a sync execute's timeout ends the command with
// return_code -1 and "Command timed out." after its stderr; a sync
// execute that would outlast compat.vigrid.max_wait is answered the same
// way by then.
func TestVigridTimeout(t *testing.T) {
	s, _ := vigridStack(t, false, map[string]any{"compat.vigrid.max_wait": "2s"})
	c := newVigridClient(t, s)
	for _, body := range []map[string]any{
		{"command": "sleep", "arguments": []string{"30"}, "synchronous": true, "timeout": 1},
		{"command": "sleep", "arguments": []string{"30"}, "synchronous": true},
	} {
		start := time.Now()
		code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), body)
		res, _ := m["result"].(map[string]any)
		if code != 200 || res == nil || res["return_code"] != float64(-1) || res["stderr"] != "\nCommand timed out." || res["stdout"] != "" {
			t.Fatalf("timeout %v: %d %s", body["timeout"], code, raw)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("timeout %v took %s", body["timeout"], d)
		}
		if o := s.waitFor(uuid.MustParse(m["order_id"].(string)), 10*time.Second, terminal); o.Status != "timed_out" {
			t.Fatalf("order status %s, want timed_out", o.Status)
		}
	}

	// A timeout past what a duration holds is one above the maximum, as
	// 1e9 is: capped at max_wait when sync, refused when async (it wrapped
	// round to a negative timeout, refused as "must not be negative").
	// Under a millisecond it is a millisecond (orderly's least), not the
	// default.
	for _, secs := range []float64{1e9, 1e10, 1e300} {
		code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"x"}, "synchronous": true, "timeout": secs})
		if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["return_code"] != float64(0) || res["stdout"] != "x\n" {
			t.Errorf("sync timeout %g: %d %s", secs, code, raw)
		}
		code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "timeout": secs})
		wantVigridError(t, fmt.Sprintf("async timeout %g", secs), code, m, 422, "timeout_seconds is above the maximum of 86400")
	}
	code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "sleep", "arguments": []string{"30"}, "synchronous": true, "timeout": 1e-12})
	if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["return_code"] != float64(-1) {
		t.Fatalf("sync timeout 1e-12: %d %s, want a timeout", code, raw)
	}
	// Its own millisecond, not max_wait's 2 s (which times out the same).
	if o := s.waitFor(uuid.MustParse(m["order_id"].(string)), 10*time.Second, terminal); o.Status != "timed_out" || o.TimeoutSecs != 0.001 {
		t.Errorf("sync timeout 1e-12: order %s with a timeout of %g s, want timed_out after 0.001 s", o.Status, o.TimeoutSecs)
	}
}

// TestVigridTimeoutNotANumber: Vigrid handed `timeout` to subprocess
// unchecked, where a string, a list or an object raised TypeError and the
// run failed after every check; orderly ran the command under the default
// timeout instead. Such a timeout is now 400, after Vigrid's own checks,
// and nothing runs; true is 1 s and false none, as Python added them.
func TestVigridTimeoutNotANumber(t *testing.T) {
	s, _ := vigridStack(t, false, map[string]any{"compat.vigrid.max_wait": "20s"})
	c := newVigridClient(t, s)
	const notANumber = "'timeout' must be a number of seconds or null"
	for _, timeout := range []any{"abc", "30", "", []any{}, []any{5}, map[string]any{}} {
		for _, sync := range []bool{true, false} {
			code, m, _ := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"ran"},
				"synchronous": sync, "timeout": timeout})
			wantVigridError(t, fmt.Sprintf("timeout %#v (sync %t)", timeout, sync), code, m, 400, notANumber)
		}
	}
	// Vigrid's own checks come first: the TypeError came at the run.
	code, m, _ := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "shutdown", "timeout": "abc"})
	wantVigridError(t, "denied with timeout \"abc\"", code, m, 403, "Command not authorized: Command matches deny pattern: ^shutdown")
	code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "nosuch", "timeout": []any{}})
	wantVigridError(t, "not found with timeout []", code, m, 404, "Command 'nosuch' not found")
	if code, m, _ := c.call("GET", "/api/v1/queue", bearer("ops"), nil); code != 200 || m["queue_size"] != float64(0) {
		t.Fatalf("queue after the refusals: %d %v", code, m)
	}
	var n int
	if err := s.b.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE source = 'vigrid'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("orders recorded for refused executes: %d %v", n, err)
	}

	code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "sleep", "arguments": []string{"30"}, "synchronous": true, "timeout": true})
	if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["return_code"] != float64(-1) {
		t.Fatalf("timeout true: %d %s, want a timeout", code, raw)
	}
	if o := s.waitFor(uuid.MustParse(m["order_id"].(string)), 10*time.Second, terminal); o.Status != "timed_out" || o.TimeoutSecs != 1 {
		t.Errorf("timeout true: order %s with a timeout of %g s, want timed_out after 1 s", o.Status, o.TimeoutSecs)
	}
	for _, timeout := range []any{false, nil} {
		code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"ran"}, "synchronous": true, "timeout": timeout})
		if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["return_code"] != float64(0) || res["stdout"] != "ran\n" {
			t.Errorf("timeout %v: %d %s", timeout, code, raw)
		}
	}
}

// TestVigridMaxWaitQueued: a sync execute queued behind a running order
// is answered about max_wait after it was sent (a second's settle), not
// after max_wait, kill_grace and more; its order is canceled, on record
// before the answer. kill_grace is 30 s here, so that the old wait (36 s)
// and the new (2 s) stay apart by more than a loaded machine's stall.
func TestVigridMaxWaitQueued(t *testing.T) {
	s, _ := vigridStack(t, false, map[string]any{"compat.vigrid.max_wait": "1s", "worker.kill_grace": "30s"})
	c := newVigridClient(t, s)
	code, a, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "sleep", "arguments": []string{"60"}})
	if code != 202 {
		t.Fatalf("async execute = %d %s", code, raw)
	}
	c.waitQueue("ops", func(l []map[string]any) bool { return len(l) == 1 && l[0]["status"] == "running" })

	start := time.Now()
	code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "synchronous": true})
	took := time.Since(start)
	res, _ := m["result"].(map[string]any)
	if code != 200 || res == nil || res["return_code"] != float64(-1) || res["stderr"] != "\nCommand timed out." || res["stdout"] != "" {
		t.Fatalf("queued sync execute = %d %s", code, raw)
	}
	if took < time.Second || took > 20*time.Second {
		t.Fatalf("queued sync execute answered after %s; want max_wait 1s plus the 1s settle", took)
	}
	// The cancel was recorded before the answer.
	if o := s.get(uuid.MustParse(m["order_id"].(string))); o.Status != "canceled" {
		t.Fatalf("queued order after the answer: %s, want canceled", o.Status)
	}
	if code, m, _ = c.call("POST", "/api/v1/kill", bearer("ops"), map[string]any{"signal": "SIGKILL"}); code != 200 {
		t.Fatalf("kill = %d %v", code, m)
	}
	s.waitFor(uuid.MustParse(a["order_id"].(string)), 10*time.Second, terminal)
}

// TestVigridDryRun: with dry_run every check still applies, nothing runs,
// and the answer is empty output, 0, dry_run true; status says so.
func TestVigridDryRun(t *testing.T) {
	s, _ := vigridStack(t, true, nil)
	c := newVigridClient(t, s)
	code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "errout", "synchronous": true})
	res, _ := m["result"].(map[string]any)
	if code != 200 || res == nil || res["stdout"] != "" || res["stderr"] != "" || res["return_code"] != float64(0) || res["dry_run"] != true {
		t.Fatalf("dry-run execute = %d %s", code, raw)
	}
	code, m, _ = c.call("GET", "/api/v1/status", bearer("ops"), nil)
	if code != 200 || m["dry_run"] != true {
		t.Fatalf("status = %d %v", code, m)
	}
	code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "nosuch"})
	wantVigridError(t, "dry-run not found", code, m, 404, "Command 'nosuch' not found")
	code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "shutdown"})
	wantVigridError(t, "dry-run deny", code, m, 403, "Command not authorized: Command matches deny pattern: ^shutdown")
	code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"a&b"}})
	wantVigridError(t, "dry-run forbidden", code, m, 400, "Forbidden character in argument: '&'")
	code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo"})
	if code != 202 {
		t.Fatalf("dry-run async = %d %v", code, m)
	}
	// A dry run called no subprocess, so a timeout that is not a number
	// failed nothing there.
	code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "synchronous": true, "timeout": "abc"})
	if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["dry_run"] != true {
		t.Fatalf("dry-run with timeout \"abc\" = %d %s", code, raw)
	}
}

// TestVigridIntegrityAndReload: a changed config file answers 503 on every
// path but health, before the ACL and the token; /reload is not locked
// out by it and reloads; a file that does not load is "Reload failed";
// restoring the bytes clears the check.
func TestVigridIntegrityAndReload(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	c := newVigridClient(t, s)
	orig, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	integrity := "Configuration integrity check failed. Restart the service."
	waitStatus := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, _, _ := c.call("GET", "/api/v1/status", bearer("ops"), nil)
			if code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status never became %d (last %d)", want, code)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	s.writeConfig(string(orig) + "# an edit\n")
	waitStatus(503)
	code, m, _ := c.call("GET", "/api/v1/status", "", nil)
	wantVigridError(t, "unauthenticated while tampered", code, m, 503, integrity)
	code, m, _ = c.from("127.0.0.2").call("GET", "/api/v1/queue", "", nil)
	wantVigridError(t, "denied address while tampered", code, m, 503, integrity)
	code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo"})
	wantVigridError(t, "execute while tampered", code, m, 503, integrity)
	if code, m, _ = c.call("GET", "/api/v1/health", "", nil); code != 200 || m["status"] != "ok" {
		t.Fatalf("health while tampered = %d %v", code, m)
	}
	// Reloading applies whatever the file now says: only for the admin
	// role, as POST /v1/admin/reload (any Vigrid token could).
	code, m, _ = c.call("POST", "/api/v1/reload", bearer("ops"), "{}")
	wantVigridError(t, "reload without the admin role", code, m, 403, "Reloading the configuration needs the admin role")
	waitStatus(503)
	admin := "Bearer " + s.token
	code, m, _ = c.call("POST", "/api/v1/reload", admin, "{}")
	if code != 200 || m["status"] != "ok" || m["message"] != "Configuration reloaded successfully" {
		t.Fatalf("reload = %d %v", code, m)
	}
	waitStatus(200)

	s.writeConfig(string(orig) + "policy: [{name: broken, principals: [ops], allow: ['(']}]\n")
	waitStatus(503)
	code, m, _ = c.call("POST", "/api/v1/reload", admin, "{}")
	if code != 500 || m["status"] != "error" || !strings.HasPrefix(fmt.Sprint(m["message"]), "Reload failed: ") {
		t.Fatalf("failed reload = %d %v", code, m)
	}
	s.writeConfig(string(orig) + "# an edit\n")
	waitStatus(200)
	if code, m, _ = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "synchronous": true}); code != 200 {
		t.Fatalf("execute after restore = %d %v", code, m)
	}
}

// TestVigridIntegrityAtOnce: Vigrid hashed its config file on every
// request, so the first request after an edit is a 503 and the first
// after the bytes are restored is answered again, with no lag.
func TestVigridIntegrityAtOnce(t *testing.T) {
	s, _ := vigridStack(t, false, nil)
	c := newVigridClient(t, s)
	orig, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		s.writeConfig(string(orig) + fmt.Sprintf("# edit %d\n", i))
		if code, m, _ := c.call("GET", "/api/v1/status", bearer("ops"), nil); code != 503 {
			t.Fatalf("edit %d: first request = %d %v, want 503", i, code, m)
		}
		s.writeConfig(string(orig))
		if code, m, _ := c.call("GET", "/api/v1/status", bearer("ops"), nil); code != 200 {
			t.Fatalf("restore %d: first request = %d %v, want 200", i, code, m)
		}
	}
}
