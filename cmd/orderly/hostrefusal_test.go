package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
)

// The compat surfaces' answers to an order the API accepted and its
// host's worker refused (docs/decisions.md, hA12's section): each in its
// tool's own refusal shape with the host's reason, never a 5xx or an
// answer that says the command ran.

// refusedOnRecord checks that order id ended rejected with the host's
// reason, ran nothing, and that its history says so: the worker's
// finished event, status rejected, with the reason.
func refusedOnRecord(t *testing.T, s *secStack, id uuid.UUID, reason string) {
	t.Helper()
	o := s.waitFor(id, 30*time.Second, terminal)
	if o.Status != "rejected" || o.Result == nil || o.Result.Error == nil || *o.Result.Error != reason ||
		o.Result.ExitCode != nil || o.Result.Stdout.Content != "" {
		b, _ := json.Marshal(o)
		t.Fatalf("order %s: %s, want rejected with %q and nothing run", id, b, reason)
	}
	var status, why string
	if err := s.b.pool.QueryRow(ctxT(t), `SELECT coalesce(status, ''), coalesce(detail->>'reason', '') FROM order_events
		WHERE order_id = $1 AND type = 'finished' ORDER BY id DESC LIMIT 1`, id).Scan(&status, &why); err != nil {
		t.Fatalf("order %s has no finished event: %v", id, err)
	}
	if status != "rejected" || !strings.Contains(reason, why) || why == "" {
		t.Fatalf("order %s's finished event: %s %q, want rejected with the host's reason %q", id, status, why, reason)
	}
}

var refusedOrderRE = regexp.MustCompile(`: order ([0-9a-f-]{36})\n$`)

// TestHTTPExecHostRefusal: an httpexec environment name the API lets
// through and the host's env_deny refuses is a 403 naming the host's rule
// and the order (it was a 500 "refused by the host"), a host rule that
// refuses the command too; a file the host cannot run (no execute bit)
// stays httpexec's 500. Bad and edge input (long names, many names,
// names that are not [A-Za-z_][A-Za-z0-9_]*) is a 4xx, never a 500.
func TestHTTPExecHostRefusal(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), map[string]any{"limits.max_env": 64})
	s.startWorkerWith("hx", func(w *config.Worker) {
		w.EnvDeny = append(config.DefaultEnvDeny(), "GREETING", "LONG_*")
		w.Deny = append(w.Deny, "refuse-me")
	})
	refused := func(what, path string, body any, wantCode int, reason string) {
		t.Helper()
		code, hdr, b := httpexecPost(t, s.url, path, "application/json", body)
		m := refusedOrderRE.FindSubmatch(b)
		if code != wantCode || hdr.Get("Content-Type") != "text/plain; charset=utf-8" || m == nil ||
			string(b) != "refused by the host: "+reason+": order "+string(m[1])+"\n" {
			t.Fatalf("%s: %d %q %q, want %d \"refused by the host: %s: order <id>\"", what, code, hdr.Get("Content-Type"), b, wantCode, reason)
		}
		refusedOnRecord(t, s, uuid.MustParse(string(m[1])), reason)
	}
	refused("env_deny", "/env", map[string]any{"environment": map[string]string{"GREETING": "hi"}, "stdout": map[string]any{"capture": true}},
		http.StatusForbidden, `forbidden: environment variable GREETING may not be set on this host (env_deny "GREETING")`)
	refused("a host rule", "/echo", map[string]any{"args": []string{"refuse-me"}}, http.StatusForbidden,
		`forbidden: denied by this host's rule "refuse-me"`)

	// A long name the host's prefix refuses: the reason names it cut
	// short, as every other refusal of a name does, not the whole name.
	long := "LONG_" + strings.Repeat("X", 200_000)
	code, _, b := httpexecPost(t, s.url, "/env", "application/json", map[string]any{"environment": map[string]string{long: "v"}})
	if code != http.StatusForbidden || len(b) > 1024 || !strings.Contains(string(b), `(env_deny "LONG_*")`) {
		t.Fatalf("a 200 000-byte name the host refuses: %d %d bytes %.300q", code, len(b), b)
	}
	if m := refusedOrderRE.FindSubmatch(b); m == nil {
		t.Fatalf("no order named: %.300q", b)
	} else if o := s.get(uuid.MustParse(string(m[1]))); o.Status != "rejected" || o.Result == nil || o.Result.Error == nil || len(*o.Result.Error) > 512 {
		t.Fatalf("the order of the long name: %s, %d-byte error", o.Status, len(*o.Result.Error))
	}

	// Edge input as a drop-in client sends it: a 4xx, never a 500, and
	// the refusal on record.
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprintf("V%d", i)] = "x"
	}
	for _, c := range []struct {
		what string
		env  map[string]string
		want int
	}{
		{"a unicode name", map[string]string{"GRÜSSE": "hi"}, http.StatusBadRequest},
		{"a name with a space", map[string]string{"A B": "hi"}, http.StatusBadRequest},
		{"a name with =", map[string]string{"A=B": "hi"}, http.StatusBadRequest},
		{"an empty name", map[string]string{"": "hi"}, http.StatusBadRequest},
		{"a value with NUL", map[string]string{"OK": "a\x00b"}, http.StatusBadRequest},
		{"more names than limits.max_env", many, http.StatusRequestEntityTooLarge},
		{"a name the API's env_deny refuses", map[string]string{"LD_PRELOAD": "/x.so"}, http.StatusForbidden},
	} {
		before := s.count(`SELECT count(*) FROM rejections WHERE source = 'httpexec'`)
		orders := s.count(`SELECT count(*) FROM orders`)
		code, _, b := httpexecPost(t, s.url, "/env", "application/json", map[string]any{"environment": c.env})
		if code != c.want {
			t.Errorf("%s: %d %.300q, want %d", c.what, code, b, c.want)
		}
		if s.count(`SELECT count(*) FROM rejections WHERE source = 'httpexec' AND status = $1`, c.want) == 0 ||
			s.count(`SELECT count(*) FROM rejections WHERE source = 'httpexec'`) != before+1 || s.count(`SELECT count(*) FROM orders`) != orders {
			t.Errorf("%s: want one refusal on record and no order", c.what)
		}
	}

	// A file the host cannot run is httpexec's 500, as the original's.
	code, _, b = httpexecPost(t, s.url, "/noexec", "application/json", map[string]any{})
	if code != http.StatusInternalServerError || !strings.HasPrefix(string(b), "refused by the host: unprocessable: ") {
		t.Fatalf("noexec: %d %q", code, b)
	}
}

// TestVigridHostRefusal: a synchronous Vigrid execute the API allows and
// the host's rules refuse is Vigrid's 403 "Command not authorized:" with
// the host's reason and the order's id (it was 200 with return_code -1,
// Vigrid's spawn failure); an asynchronous one is queued (202) and its
// order ends rejected, as Vigrid's async results are never read.
func TestVigridHostRefusal(t *testing.T) {
	src := filepath.Join(t.TempDir(), "vigrid-shell-api.conf")
	if err := os.WriteFile(src, []byte(vigridSample(vigridBin(t), false)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if err := run(t.Context(), []string{"orderly", "import", "vigrid", "--host", "vx", src}, nil, strings.NewReader(""), &out, &errb); err != nil {
		t.Fatalf("import vigrid: %v: %s", err, errb.String())
	}
	s := newSecStack(t, out.String(), map[string]any{"log.format": "text", "log.level": "warn"})
	s.startWorkerWith("vx", func(w *config.Worker) { w.Deny = append(w.Deny, "refuse-me") })
	c := newVigridClient(t, s)
	const reason = `denied by this host's rule "refuse-me"`

	code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"refuse-me"}, "synchronous": true})
	id, _ := m["order_id"].(string)
	if code != http.StatusForbidden || m["status"] != "error" || m["message"] != "Command not authorized: "+reason || len(m) != 3 || uuid.Validate(id) != nil {
		t.Fatalf("sync execute the host refuses: %d %s, want 403 Command not authorized: %s", code, raw, reason)
	}
	refusedOnRecord(t, s, uuid.MustParse(id), "forbidden: "+reason)

	code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"refuse-me"}})
	if code != http.StatusAccepted || m["status"] != "ok" {
		t.Fatalf("async execute the host refuses: %d %s, want 202 (queued)", code, raw)
	}
	refusedOnRecord(t, s, uuid.MustParse(m["order_id"].(string)), "forbidden: "+reason)

	// Edge input as a Vigrid client sends it, against the same host: a
	// refusal in Vigrid's shape, never a 500, never a spawn failure.
	for _, e := range []struct {
		what string
		body map[string]any
		want int
	}{
		{"a unicode argument the host refuses", map[string]any{"command": "echo", "arguments": []string{"refuse-me-Grüße"}, "synchronous": true}, http.StatusForbidden},
		{"a unicode command", map[string]any{"command": "échø", "synchronous": true}, http.StatusNotFound},
		{"a 200 000-byte argument", map[string]any{"command": "echo", "arguments": []string{strings.Repeat("x", 200_000)}, "synchronous": true}, http.StatusRequestEntityTooLarge},
		{"many arguments", map[string]any{"command": "echo", "arguments": make([]string, 5000), "synchronous": true}, http.StatusRequestEntityTooLarge},
	} {
		code, m, raw := c.call("POST", "/api/v1/execute", bearer("ops"), e.body)
		if code != e.want || m["status"] != "error" {
			t.Errorf("%s: %d %.300s, want %d", e.what, code, raw, e.want)
		}
	}

	// What the host allows still runs.
	code, m, raw = c.call("POST", "/api/v1/execute", bearer("ops"), map[string]any{"command": "echo", "arguments": []string{"fine"}, "synchronous": true})
	if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["stdout"] != "fine\n" || res["return_code"] != float64(0) {
		t.Fatalf("an allowed execute: %d %s", code, raw)
	}
}

// TestStage0HostRefusal: a stage0 execute whose variable the host's
// env_deny refuses (the API's list has not the name) is reported in the
// stream as stage0 reported its own failed checks: the reason as a
// stderr event and in done's stderr and errors, return_code 1 (errors
// was empty, so a client that reads errors for why nothing ran found
// nothing).
func TestStage0HostRefusal(t *testing.T) {
	const secret = "stage0-refusal-test-secret-0123456789abcdef"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Greet.md"),
		[]byte(runbookDoc("Greet", "GREETING: What to say", "  []", "", `echo "said $GREETING"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSecStack(t, fmt.Sprintf(`
policy:
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
runbooks:
  dir: %q
  timeout: 60s
compat:
  stage0:
    enabled: true
    jwt_secret: %q
    enable_login: true
    hosts: [s0strict]
`, dir, secret), map[string]any{"limits.max_env": 64})
	s.startWorkerWith("s0strict", func(w *config.Worker) { w.EnvDeny = append(config.DefaultEnvDeny(), "GREETING", "AAA_*") })
	resp, b := s.send(call{method: "POST", path: "/dev-login", body: map[string]any{"subject": "dev-user", "roles": []string{"developer"}}})
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &login) != nil {
		t.Fatalf("dev-login: %d %s", resp.StatusCode, b)
	}
	resp, b = s.send(call{method: "POST", path: "/api/runbooks/Greet.md/execute", token: login.AccessToken,
		body: map[string]any{"env_vars": map[string]string{"GREETING": "hi"}}})
	const reason = `forbidden: environment variable GREETING may not be set on this host (env_deny "GREETING")`
	events := readSSE(t, string(b))
	if resp.StatusCode != 200 || len(events) != 2 || events[0] != (sseEvent{"stderr", reason + "\n"}) || events[1].name != "done" {
		t.Fatalf("execute: %d %q", resp.StatusCode, b)
	}
	var done map[string]any
	if err := json.Unmarshal([]byte(events[1].data), &done); err != nil {
		t.Fatal(err)
	}
	errs, _ := done["errors"].([]any)
	if done["success"] != false || done["return_code"] != float64(1) || done["stdout"] != "" || done["stderr"] != reason+"\n" ||
		len(errs) != 1 || errs[0] != reason {
		t.Fatalf("done: %s, want return_code 1 and the host's reason in stderr and errors", events[1].data)
	}
	var id uuid.UUID
	if err := s.b.pool.QueryRow(ctxT(t), `SELECT id FROM orders WHERE source = 'stage0' ORDER BY submitted_at DESC LIMIT 1`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	refusedOnRecord(t, s, id, reason)

	// Edge input as a stage0 client sends it, against the same host:
	// never a 500; a name the host's prefix refuses is named cut short.
	many := map[string]string{"GREETING": "hi"}
	for i := range 70 {
		many[fmt.Sprintf("V%d", i)] = "x"
	}
	for _, c := range []struct {
		what string
		env  map[string]string
		want string // in done's stderr
	}{
		{"a long name the host refuses", map[string]string{"GREETING": "hi", "AAA_" + strings.Repeat("X", 200_000): "v"}, `(env_deny "AAA_*")`},
		{"a unicode name", map[string]string{"GREETING": "hi", "GRÜSSE": "hi"}, "ERROR: Invalid environment variable name: GRÜSSE"},
		{"more names than limits.max_env", many, ""},
	} {
		resp, b := s.send(call{method: "POST", path: "/api/runbooks/Greet.md/execute", token: login.AccessToken, body: map[string]any{"env_vars": c.env}})
		if resp.StatusCode >= 500 {
			t.Errorf("%s: %d %.300q", c.what, resp.StatusCode, b)
			continue
		}
		if resp.StatusCode != 200 {
			if c.want != "" || !json.Valid(b) {
				t.Errorf("%s: %d %.300q", c.what, resp.StatusCode, b)
			}
			continue
		}
		events := readSSE(t, string(b))
		var done map[string]any
		if last := events[len(events)-1]; last.name != "done" || json.Unmarshal([]byte(last.data), &done) != nil {
			t.Fatalf("%s: %.300q", c.what, b)
		}
		if stderr, _ := done["stderr"].(string); done["return_code"] != float64(1) || !strings.Contains(stderr, c.want) || len(stderr) > 1024 {
			t.Errorf("%s: done %.500s, want return_code 1 and %q in a short stderr", c.what, events[len(events)-1].data, c.want)
		}
	}
}
