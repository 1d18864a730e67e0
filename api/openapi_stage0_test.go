package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/testenv"
)

// stage0Runbook is a runbook in stage0's format; claims, when set, is the
// YAML of a Required Claims section.
func stage0Runbook(name, env, claims, script string) string {
	doc := "# " + name + "\n\n# Environment Requirements\n```yaml\n" + env + "\n```\n\n" +
		"# File System Requirements\n```yaml\nInput:\n  []\n```\n\n"
	if claims != "" {
		doc += "# Required Claims\n```yaml\n" + claims + "\n```\n\n"
	}
	return doc + "# Script\n```sh\n" + script + "\n```\n\n# History\n"
}

// TestSpecStage0Responses drives the stage0 compat surface (api/compat),
// mounted as serve mounts it, with every status its handlers answer, and
// validates each request and response against openapi.yaml: status,
// content type, body (closed schemas) and, for execute's stream, every
// event. Runs are orders on a real worker; PostgreSQL and NATS are real.
func TestSpecStage0Responses(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	dir, hold := t.TempDir(), t.TempDir()
	books := map[string]string{
		"Hello.md": stage0Runbook("Hello", "GREETING: How to greet", "", `echo "$GREETING, world"
echo "to stderr" >&2`),
		"Ops.md": stage0Runbook("Ops", "{}", "roles: ops", "echo ops only"),
		// Hold runs until the test lets it end, so that its delegated
		// token is live meanwhile.
		"Hold.md": stage0Runbook("Hold", "HOLD: where to wait", "", `echo "$RUNBOOK_API_TOKEN" > "$HOLD/token.tmp" && mv "$HOLD/token.tmp" "$HOLD/token"
i=0
while [ ! -e "$HOLD/release" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done`),
		"Notes.md": "Just notes, no title line.\n",
	}
	for name, text := range books {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The config, the ACL and the rate limit change during the test; the
	// surface reads them per request, as it reads a reloaded config.
	var mu sync.Mutex
	cfg := config.Default()
	cfg.Runbooks.Dir, cfg.Runbooks.Timeout = dir, time.Minute
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.Stage0.Enabled, cfg.Compat.Stage0.EnableLogin = true, true
	cfg.Compat.Stage0.JWTSecret = "stage0-spec-test-secret-0123456789abcdef"
	cfg.Compat.Stage0.Hosts = []string{"h1"}
	current := func() config.Config { mu.Lock(); defer mu.Unlock(); return cfg }
	set := func(f func(*config.Config)) { mu.Lock(); defer mu.Unlock(); f(&cfg) }
	var acl atomic.Pointer[netacl.ACL]
	var ratePerIP atomic.Int64
	var shutdowns atomic.Int64

	// The API of e (its store, bus and tokens) with runbooks on, and the
	// stage0 surface at /api and /dev-login.
	srv := e.runbookAPI(config.Rule{Name: "stage0", Roles: []string{"developer", "ops"}, Hosts: []string{"*"}, Allow: []string{"^runbook:"}},
		func() api.Settings {
			return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerIP: int(ratePerIP.Load())}
		}, func() config.Runbooks { return current().Runbooks })
	h := &compat.Stage0{Deps: compat.Deps{Orders: srv, Config: current, ACL: acl.Load}, Runbooks: srv,
		Getenv: func(string) (string, bool) { return "", false }, Shutdown: func() { shutdowns.Add(1) }}
	srv.MountCompat(api.CompatSurface{Prefix: "/api", Handler: h}, api.CompatSurface{Prefix: "/dev-login", Handler: h})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	s0 := *e
	s0.url = hs.URL
	sc := newSurfaceChecker(t, &s0, "stage0")
	sc.events = sc.checkStage0Events

	// do sends c and fails the test unless the answer has status want.
	do := func(want int, c call) []byte {
		t.Helper()
		resp, b := sc.do(c)
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, want, b)
		}
		return b
	}
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	login := func(subject string, roles ...string) string {
		t.Helper()
		b := do(http.StatusOK, call{method: "POST", path: "/dev-login", body: map[string]any{"subject": subject, "roles": roles}})
		var l struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(b, &l); err != nil || l.AccessToken == "" {
			t.Fatalf("dev-login: %s", b)
		}
		return l.AccessToken
	}

	// /dev-login: tokens, and its refusals.
	dev := bearer(login("dev-user-1", "developer"))
	ops := bearer(login("ops-user", "ops"))
	guest := bearer(login("guest-user", "guest")) // no policy rule applies
	do(http.StatusOK, call{method: "POST", path: "/dev-login"})
	do(http.StatusBadRequest, call{method: "POST", path: "/dev-login", body: `{"subject":`, invalid: true})
	do(http.StatusBadRequest, call{method: "POST", path: "/dev-login", body: map[string]any{"roles": "developer"}, invalid: true})
	do(http.StatusMethodNotAllowed, call{method: "GET", path: "/dev-login", invalid: true, specMethod: "POST"})
	do(http.StatusRequestEntityTooLarge, call{method: "POST", path: "/dev-login", body: `{"subject": "` + strings.Repeat("x", 64<<10) + `"}`, invalid: true})

	// Reads.
	if b := do(http.StatusOK, call{method: "GET", path: "/api/runbooks", hdr: dev}); strings.Contains(string(b), "Notes.md") {
		t.Errorf("list: a file without a title is listed: %s", b)
	}
	do(http.StatusOK, call{method: "GET", path: "/api/runbooks/Hello.md", hdr: dev})
	do(http.StatusOK, call{method: "GET", path: "/api/runbooks/Hello.md/required-env", hdr: dev})
	do(http.StatusOK, call{method: "GET", path: "/api/config", hdr: dev})
	do(http.StatusNotFound, call{method: "GET", path: "/api/runbooks/Nope.md", hdr: dev})
	do(http.StatusNotFound, call{method: "GET", path: "/api/runbooks/Nope.md/required-env", hdr: dev})

	// Validate: valid, invalid, a refused body, claims, not found.
	do(http.StatusOK, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: dev, body: map[string]any{"env_vars": map[string]any{"GREETING": "Hi"}}})
	do(http.StatusBadRequest, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: dev})
	do(http.StatusBadRequest, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: dev, body: map[string]any{"env_vars": map[string]any{"1BAD": "x"}}})
	do(http.StatusBadRequest, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: dev, body: `{"env_vars":`, invalid: true})
	do(http.StatusRequestEntityTooLarge, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: dev,
		body: map[string]any{"env_vars": map[string]any{"GREETING": strings.Repeat("x", 2<<20)}}})
	do(http.StatusForbidden, call{method: "PATCH", path: "/api/runbooks/Ops.md/validate", hdr: dev})
	do(http.StatusOK, call{method: "PATCH", path: "/api/runbooks/Ops.md/validate", hdr: ops})
	do(http.StatusNotFound, call{method: "PATCH", path: "/api/runbooks/Nope.md/validate", hdr: dev})

	// Execute: a run on the worker, a run refused inside the stream, and
	// the JSON refusals before any stream.
	b := do(http.StatusOK, call{method: "POST", path: "/api/runbooks/Hello.md/execute", hdr: append(dev, "X-Correlation-Id", "spec-1"),
		body: map[string]any{"env_vars": map[string]any{"GREETING": "Hello"}}})
	if !strings.Contains(string(b), `"return_code": 0, "stdout": "Hello, world\n"`) {
		t.Errorf("execute: %s", b)
	}
	if b := do(http.StatusOK, call{method: "POST", path: "/api/runbooks/Hello.md/execute", hdr: dev}); !strings.Contains(string(b), `"return_code": 1`) {
		t.Errorf("execute without GREETING: %s", b)
	}
	do(http.StatusBadRequest, call{method: "POST", path: "/api/runbooks/Hello.md/execute", hdr: dev, body: `{"env_vars":`, invalid: true})
	do(http.StatusForbidden, call{method: "POST", path: "/api/runbooks/Ops.md/execute", hdr: dev})
	if b := do(http.StatusForbidden, call{method: "POST", path: "/api/runbooks/Hello.md/execute", hdr: guest,
		body: map[string]any{"env_vars": map[string]any{"GREETING": "Hello"}}}); !strings.Contains(string(b), `"error":"policy: `) {
		t.Errorf("a policy refusal: %s", b)
	}
	do(http.StatusNotFound, call{method: "POST", path: "/api/runbooks/Nope.md/execute", hdr: dev})

	// Authentication and methods.
	for _, hdr := range [][]string{nil, {"Authorization", "Token x"}, bearer("not.a.jwt"), bearer("orderly-rb-unknown")} {
		do(http.StatusUnauthorized, call{method: "GET", path: "/api/runbooks", hdr: hdr})
	}
	do(http.StatusUnauthorized, call{method: "POST", path: "/api/runbooks/Hello.md/execute"})
	do(http.StatusUnauthorized, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate"})
	for _, c := range []call{
		{method: "POST", path: "/api/runbooks", specMethod: "GET"},
		{method: "DELETE", path: "/api/runbooks/Hello.md", specMethod: "GET"},
		{method: "POST", path: "/api/runbooks/Hello.md/required-env", specMethod: "GET"},
		{method: "POST", path: "/api/runbooks/Hello.md/validate", specMethod: "PATCH"},
		{method: "GET", path: "/api/runbooks/Hello.md/execute", specMethod: "POST"},
		{method: "POST", path: "/api/config", specMethod: "GET"},
	} {
		c.hdr, c.invalid = dev, true
		do(http.StatusMethodNotAllowed, c)
	}

	// Shutdown: off (404, whatever the method), then on.
	// A client migrated from stage0 (whose CLI ends each run with a
	// shutdown) is told which setting is off, not only "Not found".
	for _, c := range []call{{method: "POST", path: "/api/shutdown", hdr: dev}, {method: "GET", path: "/api/shutdown", invalid: true, specMethod: "POST"}} {
		if b := do(http.StatusNotFound, c); !strings.Contains(string(b), "/api/shutdown is off (compat.stage0.shutdown;") {
			t.Errorf("%s /api/shutdown while off: %s, want the setting named", c.method, b)
		}
	}
	set(func(c *config.Config) { c.Compat.Stage0.Shutdown = true })
	do(http.StatusUnauthorized, call{method: "POST", path: "/api/shutdown"})
	do(http.StatusMethodNotAllowed, call{method: "GET", path: "/api/shutdown", hdr: dev, invalid: true, specMethod: "POST"})
	// stage0 stopped for any valid token; orderly only for the admin role.
	do(http.StatusForbidden, call{method: "POST", path: "/api/shutdown", hdr: dev})
	if shutdowns.Load() != 0 {
		t.Fatal("a developer's token stopped the process")
	}
	do(http.StatusOK, call{method: "POST", path: "/api/shutdown", hdr: bearer(login("root-user", "admin"))})
	// The stop is asynchronous (a goroutine started after the answer):
	// wait for it, not for a fixed moment, which a loaded machine's
	// scheduler can outlast.
	testenv.WaitUntil(t, 20*time.Second, "the shutdown called", func() bool { return shutdowns.Load() != 0 })
	if shutdowns.Load() != 1 {
		t.Errorf("shutdown called %d times, want 1", shutdowns.Load())
	}

	// A running script's delegated token: it may validate and execute,
	// and reads nothing.
	holdBody := map[string]any{"env_vars": map[string]any{"HOLD": hold}}
	held := make(chan []byte, 1)
	go func() {
		_, b := sc.do(call{method: "POST", path: "/api/runbooks/Hold.md/execute", hdr: dev, body: holdBody})
		held <- b
	}()
	var token string
	for deadline := time.Now().Add(30 * time.Second); token == ""; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(hold, "token")); err == nil {
			token = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatal("Hold.md never wrote its token")
		}
	}
	delegated := bearer(token)
	for _, c := range []call{
		{method: "GET", path: "/api/runbooks"},
		{method: "GET", path: "/api/runbooks/Hello.md"},
		{method: "GET", path: "/api/runbooks/Hello.md/required-env"},
		{method: "GET", path: "/api/config"},
		{method: "POST", path: "/api/shutdown"},
	} {
		c.hdr = delegated
		do(http.StatusForbidden, c)
	}
	do(http.StatusOK, call{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: delegated, body: map[string]any{"env_vars": map[string]any{"GREETING": "Hi"}}})
	if err := os.WriteFile(filepath.Join(hold, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-held:
		if !strings.Contains(string(b), `"return_code": 0`) {
			t.Errorf("Hold.md: %s", b)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Hold.md did not end")
	}

	// /dev-login off; then the network ACL refuses every route.
	set(func(c *config.Config) { c.Compat.Stage0.EnableLogin = false })
	for _, c := range []call{{method: "POST", path: "/dev-login"}, {method: "GET", path: "/dev-login", invalid: true, specMethod: "POST"}} {
		if b := do(http.StatusNotFound, c); !strings.Contains(string(b), "/dev-login is off (compat.stage0.enable_login,") {
			t.Errorf("%s /dev-login while off: %s, want the setting named", c.method, b)
		}
	}
	deny, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	acl.Store(deny)
	forbidden := rejections(t, e, "stage0", "forbidden")
	for _, c := range []call{
		{method: "POST", path: "/dev-login"},
		{method: "GET", path: "/api/runbooks", hdr: dev},
		{method: "GET", path: "/api/runbooks/Hello.md", hdr: dev},
		{method: "GET", path: "/api/runbooks/Hello.md/required-env", hdr: dev},
		{method: "PATCH", path: "/api/runbooks/Hello.md/validate", hdr: dev},
		{method: "POST", path: "/api/runbooks/Hello.md/execute", hdr: dev},
		{method: "GET", path: "/api/config", hdr: dev},
		{method: "POST", path: "/api/shutdown", hdr: dev},
	} {
		do(http.StatusForbidden, c)
	}
	acl.Store(nil)
	// Each ACL refusal is on record, as the native API's are.
	if n := rejections(t, e, "stage0", "forbidden") - forbidden; n != 8 {
		t.Errorf("%d ACL refusals recorded, want 8", n)
	}

	// limits.rate_per_ip: orderly's 429.
	ratePerIP.Store(1)
	got429 := false
	for range 3 {
		if resp, _ := sc.do(call{method: "GET", path: "/api/config", hdr: dev}); resp.StatusCode == http.StatusTooManyRequests {
			got429 = true
		}
	}
	if !got429 {
		t.Error("rate_per_ip 1: no 429 in three requests")
	}
}

// checkStage0Events validates a stage0 execute stream: stdout and stderr
// events, then one done whose data matches Stage0Done.
func (sc *specChecker) checkStage0Events(c call, body []byte) {
	sc.t.Helper()
	text := string(body)
	if !strings.HasSuffix(text, "\n\n") {
		sc.t.Errorf("%s: the stream does not end with a blank line: %q", c.path, text)
		return
	}
	blocks := strings.Split(strings.TrimSuffix(text, "\n\n"), "\n\n")
	for i, block := range blocks {
		lines := strings.Split(block, "\n")
		name, ok := strings.CutPrefix(lines[0], "event: ")
		if !ok {
			sc.t.Errorf("%s: an event without a name: %q", c.path, block)
			continue
		}
		var data []string
		for _, l := range lines[1:] {
			d, ok := strings.CutPrefix(l, "data: ")
			if !ok {
				sc.t.Errorf("%s: %q is not a data line", c.path, l)
			}
			data = append(data, d)
		}
		last := i == len(blocks)-1
		switch {
		case (name == "stdout" || name == "stderr") && !last:
		case name == "done" && last:
			var v any
			if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &v); err != nil {
				sc.t.Errorf("%s: done is not JSON: %v: %q", c.path, err, data)
				continue
			}
			done := sc.doc.Components.Schemas["Stage0Done"]
			if done == nil {
				sc.t.Errorf("%s: openapi.yaml has no Stage0Done schema for the done event", c.path)
				continue
			}
			if err := done.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
				sc.t.Errorf("%s: done does not match Stage0Done: %v", c.path, err)
			}
		default:
			sc.t.Errorf("%s: event %d of %d is %q: want stdout and stderr, then done", c.path, i+1, len(blocks), name)
		}
	}
}
