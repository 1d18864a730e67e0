package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
)

// serveHostCompatConfig enables the three compat surfaces and names no
// host for any of them (nor runbooks.host), as a newcomer on orderly serve
// writes it; hostLine, when not empty, is added under compat.httpexec and
// compat.vigrid.
func serveHostCompatConfig(h httpexecRoot, runbooks, opsHash, stage0Secret, hostLine string) string {
	return fmt.Sprintf(`
acl:
  allow: ["127.0.0.1/32", "::1/128"]
auth:
  tokens:
    - {name: ops, sha256: %q}
policy:
  - {name: httpexec, principals: [httpexec-client], hosts: ["*"], allow: [".*"]}
  - {name: ops, principals: [ops], hosts: ["*"], allow: [".*"], run_as: ["", "*"]}
  - {name: stage0, roles: [developer], hosts: ["*"], allow: ['^runbook:']}
worker:
  command_path: [%q, /usr/bin, /bin]
runbooks: {dir: %q, timeout: 60s}
compat:
  httpexec:
    enabled: true
    exec_root: %q
    principal: httpexec-client
    %s
  vigrid:
    enabled: true
    %s
  stage0:
    enabled: true
    jwt_secret: %q
`, opsHash, h.root, runbooks, h.root, hostLine, hostLine, stage0Secret)
}

// TestServeCompatSurfacesRunOnServesHost: on orderly serve (the stack
// with serve's fill, serveCompatHosts), compat surfaces whose config names
// no host run their orders on serve's own worker host, as the tools they
// stand in for ran commands on their own machine: an httpexec call, a
// Vigrid execute, a stage0 runbook and a run of orderly's own runbook
// endpoint that names no host each finish on host sv, and so does an
// order after a reload. A host the config names wins over serve's; and
// orderly api, which fills nothing, still refuses the config and says
// which host to name.
func TestServeCompatSurfacesRunOnServesHost(t *testing.T) {
	h := newHTTPExecRoot(t)
	books := t.TempDir()
	if err := os.WriteFile(filepath.Join(books, "Hello.md"), []byte(runbookDoc("Hello", "{}", "  []", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	caller := runbookDoc("Caller", "{}", "  []", "", `curl -sS -N -X POST "$RUNBOOK_URL/Hello.md/execute" -H "$RUNBOOK_H_AUTH" -H "$RUNBOOK_H_CTYPE" -d '{}'`)
	if err := os.WriteFile(filepath.Join(books, "Caller.md"), []byte(caller), 0o644); err != nil {
		t.Fatal(err)
	}
	const stage0Secret = "stage0-servehost-test-secret-0123456789abcdef"
	opsToken, opsHash := auth.NewToken()
	yamlText := serveHostCompatConfig(h, books, opsHash, stage0Secret, "")
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte(yamlText), 0o600); err != nil {
		t.Fatal(err)
	}
	ov := map[string]any{"limits.rate_per_ip": nil, "limits.rate_per_principal": nil, "host": "sv"}

	// orderly api: no host of its own, so the config is refused as before.
	_, err := config.NewWatcher(path, nil, maps.Clone(ov), nil)
	for _, key := range []string{"compat.httpexec.host: must name", "compat.vigrid.host: must name", "compat.stage0.hosts: name at least one host", "its own: --host or host"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("orderly api's load: %v, want %q in it", err, key)
		}
	}

	s := &secStack{stack: newStackFilled(t, path, ov, serveCompatHosts(), "sv"), path: path}
	cfg := s.watcher.Current()
	if cfg.Compat.HTTPExec.Host != "sv" || cfg.Compat.Vigrid.Host != "sv" || !slices.Equal(cfg.Compat.Stage0.Hosts, []string{"sv"}) || cfg.Runbooks.Host != "sv" {
		t.Fatalf("filled hosts: httpexec %q, vigrid %q, stage0 %q, runbooks %q", cfg.Compat.HTTPExec.Host, cfg.Compat.Vigrid.Host, cfg.Compat.Stage0.Hosts, cfg.Runbooks.Host)
	}

	lastHost := func(what string) {
		t.Helper()
		code, b := s.do("GET", "/v1/orders?limit=1", nil)
		var list api.OrderList
		if err := json.Unmarshal(b, &list); code != 200 || err != nil || len(list.Orders) != 1 {
			t.Fatalf("%s: GET /v1/orders = %d %s", what, code, b)
		}
		if o := list.Orders[0]; o.Host != "sv" || o.Status != "succeeded" {
			t.Fatalf("%s: latest order %+v, want succeeded on sv", what, o)
		}
	}
	httpexec := func(what string) {
		t.Helper()
		r := httpexecRun(t, s.url, "/echo", map[string]any{"args": []string{"hi"}, "stdout": map[string]any{"capture": true}})
		if content, _ := stream(t, r.Stdout); r.Return == nil || *r.Return != 0 || content != "hi\n" {
			t.Fatalf("%s: httpexec echo = %+v", what, r)
		}
		lastHost(what)
	}
	httpexec("httpexec")

	c := newVigridClient(t, s)
	code, m, raw := c.call("POST", "/api/v1/execute", "Bearer "+opsToken, map[string]any{"command": "echo", "arguments": []string{"vigrid"}, "synchronous": true})
	if res, _ := m["result"].(map[string]any); code != 200 || res == nil || res["stdout"] != "vigrid\n" {
		t.Fatalf("vigrid execute = %d %s", code, raw)
	}
	lastHost("vigrid")

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
		"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(stage0Secret))
	if err != nil {
		t.Fatal(err)
	}
	resp, b := s.send(call{method: "POST", path: "/api/runbooks/Hello.md/execute", token: tok, body: map[string]any{}})
	ev := readSSE(t, string(b))
	if resp.StatusCode != 200 || len(ev) == 0 || ev[len(ev)-1].name != "done" || !strings.Contains(ev[len(ev)-1].data, `"success": true`) {
		t.Fatalf("stage0 execute = %d %s", resp.StatusCode, b)
	}
	lastHost("stage0")

	// A sub-runbook through the surface: serve's one host runs the
	// caller, so the child is refused, and a stage0 client, which cannot
	// name a host, is told which setting to change.
	resp, b = s.send(call{method: "POST", path: "/api/runbooks/Caller.md/execute", token: tok, body: map[string]any{}})
	ev = readSSE(t, string(b))
	const busy = "host sv is running a runbook of this chain; a sub-runbook must run on another host: " +
		"every host of compat.stage0.hosts (sv) is running one; list another there, with a worker serving it"
	if resp.StatusCode != 200 || len(ev) == 0 || ev[len(ev)-1].name != "done" || !strings.Contains(ev[len(ev)-1].data, busy) {
		t.Fatalf("stage0 sub-runbook on serve's one host = %d %s", resp.StatusCode, b)
	}
	lastHost("stage0 caller")

	// orderly's own runbook endpoint: a run that names no host goes to
	// runbooks.host, which serve fills in as it does the surfaces'.
	code, b = s.do("POST", "/v1/runbooks/Hello.md/execute?wait=30", map[string]any{}, "Authorization", "Bearer "+opsToken)
	if code != 200 {
		t.Fatalf("runbook execute without a host = %d %s", code, b)
	}
	lastHost("runbook")

	// A reload fills the new file in the same way.
	s.writeConfig(yamlText + "\n# reloaded\n")
	if _, err := s.watcher.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	httpexec("httpexec after a reload")

	// A configured host wins: the orders go to it (no worker there, so
	// they wait), not to serve's.
	s.writeConfig(serveHostCompatConfig(h, books, opsHash, stage0Secret, "host: elsewhere"))
	if _, err := s.watcher.Reload(); err != nil {
		t.Fatalf("reload naming a host: %v", err)
	}
	cfg = s.watcher.Current()
	if cfg.Compat.HTTPExec.Host != "elsewhere" || cfg.Compat.Vigrid.Host != "elsewhere" || !slices.Equal(cfg.Compat.Stage0.Hosts, []string{"sv"}) {
		t.Fatalf("configured hosts: httpexec %q, vigrid %q, stage0 %q", cfg.Compat.HTTPExec.Host, cfg.Compat.Vigrid.Host, cfg.Compat.Stage0.Hosts)
	}
	code, m, raw = c.call("POST", "/api/v1/execute", "Bearer "+opsToken, map[string]any{"command": "echo", "arguments": []string{"queued"}})
	if code != 202 {
		t.Fatalf("vigrid async execute = %d %s", code, raw)
	}
	if o := s.get(uuid.MustParse(m["order_id"].(string))); o.Host != "elsewhere" || o.Status != "queued" {
		t.Fatalf("order of a configured host = %+v", o)
	}
}

// compatDocExample is the first YAML block of docs/compat.md's section
// heading, decoded.
func compatDocExample(t *testing.T, heading string) map[string]any {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "compat.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/compat.md has no %q", heading)
	}
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatalf("%s: no yaml block", heading)
	}
	block, _, _ = strings.Cut(block, "```")
	var m map[string]any
	if err := yaml.Unmarshal([]byte(block), &m); err != nil {
		t.Fatalf("%s: %v", heading, err)
	}
	return m
}

// onServe makes a docs/compat.md example what compat.md tells a newcomer
// on orderly serve to make it: the surface's host left out (serve's own,
// sv here) and the policy rules' hosts that host; set are this machine's
// paths and secrets.
func onServe(t *testing.T, m map[string]any, surface string, set map[string]any) string {
	t.Helper()
	for _, r := range m["policy"].([]any) {
		r.(map[string]any)["hosts"] = []string{"sv"}
	}
	c := m["compat"].(map[string]any)[surface].(map[string]any)
	delete(c, "host")
	delete(c, "hosts")
	for path, v := range set {
		keys := strings.Split(path, ".")
		cur := m
		for _, k := range keys[:len(keys)-1] {
			cur = cur[k].(map[string]any)
		}
		cur[keys[len(keys)-1]] = v
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCompatDocExamplesRunOnServe walks docs/compat.md's httpexec and
// stage0 examples as a newcomer on orderly serve does (the Vigrid one is
// `orderly import vigrid`, whose output names the host: TestVigridImportAndRun):
// with the host left out and the policy naming serve's host, as compat.md
// says, a client's first call runs on serve's worker.
func TestCompatDocExamplesRunOnServe(t *testing.T) {
	ov := map[string]any{"limits.rate_per_ip": nil, "limits.rate_per_principal": nil, "host": "sv"}
	t.Run("httpexec", func(t *testing.T) {
		h := newHTTPExecRoot(t)
		path := onServe(t, compatDocExample(t, "## httpexec"), "httpexec", map[string]any{
			"acl.allow":                 []string{"127.0.0.1/32"},
			"worker.command_path":       []string{h.root, filepath.Join(h.root, "sub")},
			"compat.httpexec.exec_root": h.root,
		})
		s := newStackFilled(t, path, maps.Clone(ov), serveCompatHosts(), "sv")
		r := httpexecRun(t, s.url, "/echo", map[string]any{"args": []string{"hi"}, "stdout": map[string]any{"capture": true}})
		if content, _ := stream(t, r.Stdout); r.Return == nil || *r.Return != 0 || content != "hi\n" {
			t.Fatalf("httpexec echo = %+v", r)
		}
	})
	t.Run("stage0", func(t *testing.T) {
		books := t.TempDir()
		if err := os.WriteFile(filepath.Join(books, "Hello.md"), []byte(runbookDoc("Hello", "{}", "  []", "", "echo hello")), 0o644); err != nil {
			t.Fatal(err)
		}
		const secret = "stage0-doc-example-secret-0123456789abcdef"
		path := onServe(t, compatDocExample(t, "## stage0 runbook API"), "stage0", map[string]any{
			"runbooks.dir":             books,
			"compat.stage0.jwt_secret": secret,
		})
		s := &secStack{stack: newStackFilled(t, path, maps.Clone(ov), serveCompatHosts(), "sv"), path: path}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ci", "roles": []string{"developer"},
			"iss": "dev-idp", "aud": "dev-api", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		resp, b := s.send(call{method: "POST", path: "/api/runbooks/Hello.md/execute", token: tok, body: map[string]any{}})
		ev := readSSE(t, string(b))
		if resp.StatusCode != 200 || len(ev) == 0 || ev[len(ev)-1].name != "done" || !strings.Contains(ev[len(ev)-1].data, `"stdout": "hello\n"`) {
			t.Fatalf("stage0 execute = %d %s", resp.StatusCode, b)
		}
	})
}
