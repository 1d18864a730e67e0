package main

// The hostile-input suite (issue 3): every attack goes through HTTP to a
// real API, PostgreSQL, NATS and worker, and must end in a 4xx with a
// stable error code or a rejected order, with nothing executed, every
// refusal audited without secrets, and the service still ready.

import (
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
)

// vigridForbidden is the example config's forbidden_chars, as a YAML list:
// Vigrid's 12 (vigridDefaultForbidden).
const vigridForbidden = `["\"", "'", ";", "\\", "|", "&", "(", ")", "{", "}", "$", "` + "`" + `"]`

// TestSecurityTraversalNeverExecutes sends command names that try to leave
// command_path or exec_root. The API cannot resolve paths on a host, so the
// worker must reject them; a marker file proves the target never ran.
func TestSecurityTraversalNeverExecutes(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "marker")
	evil := script(t, filepath.Join(dir, "outside", "evil"), marker)
	root := filepath.Join(dir, "root")
	bin := filepath.Join(root, "bin")
	script(t, filepath.Join(bin, "tool"), marker)
	for link, target := range map[string]string{
		filepath.Join(bin, "inlink"): "tool",                   // inside the root
		filepath.Join(bin, "escape"): evil,                     // absolute, out of the root
		filepath.Join(bin, "dotdot"): "../../outside/evil",     // relative, out of the root
		filepath.Join(root, "bin2"):  filepath.Dir(evil),       // a directory link out
		filepath.Join(bin, "proc"):   "/proc/self/root" + evil, // out through /proc
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}

	s := newSecStack(t, "worker:\n  forbidden_chars: "+vigridForbidden+"\n", nil, "h1")
	jail := func(follow bool) func(*config.Worker) {
		return func(w *config.Worker) {
			w.ExecRoot, w.CommandPath, w.FollowLinks = root, []string{bin}, follow
		}
	}
	s.startWorkerWith("jail", jail(true))
	s.startWorkerWith("jailstrict", jail(false))

	up := strings.Repeat("../", 12)
	rel := strings.TrimPrefix(evil, "/")
	cases := []struct{ host, command string }{
		{"h1", up + rel},
		{"h1", "./" + rel},
		{"h1", evil},
		{"h1", "/usr/bin/" + up + rel},
		{"h1", "/usr/bin/./" + up + rel},
		{"h1", "/usr/bin/" + strings.ReplaceAll(up, "/", "//") + rel},
		{"h1", strings.ReplaceAll(up, "../", "%2e%2e%2f") + rel},
		{"h1", strings.ReplaceAll(up, "../", "..%2F") + rel},
		{"h1", strings.ReplaceAll(up, "../", "%252e%252e%252f") + rel},
		{"h1", strings.ReplaceAll(up, "../", `..\`) + rel},
		{"h1", "\u2024\u2024/" + rel}, // one-dot leaders look like ".."
		{"h1", "file://" + evil},
		{"h1", "~/" + rel},
		{"h1", "/proc/self/root" + evil},
		{"h1", "/proc/self/exe"},
		{"h1", "."},
		{"h1", ".."},
		{"h1", "evil"},
		{"h1", "/"},
		{"h1", "/usr/bin"},
		{"jail", "escape"},
		{"jail", "dotdot"},
		{"jail", "proc"},
		{"jail", filepath.Join(bin, "escape")},
		{"jail", filepath.Join(root, "bin2", "evil")},
		{"jail", bin + "/../bin2/evil"},
		{"jail", "/usr/bin/env"},
		{"jail", "env"},
		{"jailstrict", "inlink"},
		{"jailstrict", "escape"},
	}
	for _, c := range cases {
		t.Run(c.host+":"+c.command, func(t *testing.T) {
			r := s.submitRefused(map[string]any{"host": c.host, "command": c.command})
			if r.code != "" {
				t.Logf("refused by the API: %d %s", r.status, r.code)
			}
		})
	}
	if got := ran(t, marker); got != "" {
		t.Fatalf("a hostile command ran: marker holds %q", got)
	}

	// The jail works: commands inside it run, and the links the policy
	// allows are followed.
	for _, c := range []struct{ host, command string }{{"jail", "tool"}, {"jail", "inlink"}, {"jailstrict", "tool"}, {"h1", "true"}} {
		o := s.submit(map[string]any{"host": c.host, "command": c.command}, "?wait=30", http.StatusOK)
		if o.Status != "succeeded" {
			t.Fatalf("%s on %s: %s %+v", c.command, c.host, o.Status, o.Result)
		}
	}
	if got := ran(t, marker); got != "tool\ntool\ntool\n" {
		t.Fatalf("marker = %q, want tool run three times (inlink runs tool)", got)
	}
	s.checkAudit(s.token)
	s.assertReady(nil)
}

// TestSecurityHostileRequests sends malformed and oversized input the API
// must refuse on its own, each with its stable code and one audit row.
func TestSecurityHostileRequests(t *testing.T) {
	s := newSecStack(t, "", nil, "h1")
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	order := func(kv ...any) map[string]any {
		m := map[string]any{"host": "h1", "command": "touch", "args": []string{marker}}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	nEnv := func(n, size int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("V%d", i)] = strings.Repeat("v", size)
		}
		return m
	}
	const bad, large, unproc, media = 400, 413, 422, 415
	cases := []struct {
		name   string
		method string // POST by default
		path   string // /v1/orders by default
		body   any
		hdr    []string
		status int
		code   string
	}{
		// Host ids must be one NATS subject token.
		{name: "host a.b", body: order("host", "a.b"), status: bad},
		{name: "host *", body: order("host", "*"), status: bad},
		{name: "host >", body: order("host", ">"), status: bad},
		{name: "host with space", body: order("host", "a b"), status: bad},
		{name: "host empty", body: order("host", ""), status: bad},
		{name: "host NUL", body: order("host", "h1\x00"), status: bad},
		{name: "host newline", body: order("host", "h1\n"), status: bad},
		{name: "host too long", body: order("host", strings.Repeat("h", 129)), status: bad},
		{name: "host traversal", body: order("host", "../h1"), status: bad},
		{name: "host slash", body: order("host", "h1/x"), status: bad},
		{name: "host subject wildcard", body: order("host", "h1.>"), status: bad},
		{name: "host $SYS", body: order("host", "$SYS"), status: bad},
		{name: "host nbsp", body: order("host", "h1\u00a0"), status: bad},
		{name: "host fullwidth", body: order("host", "ｈ1"), status: bad},
		{name: "host invalid UTF-8", body: []byte(`{"host":"h` + "\xff" + `","command":"true"}`), status: bad},
		// NUL and control bytes.
		{name: "command NUL", body: order("command", "tou\x00ch"), status: bad},
		{name: "command ESC", body: order("command", "touch\x1b[31m"), status: bad},
		{name: "command CR", body: order("command", "touch\r"), status: bad},
		{name: "command newline", body: order("command", "touch\nid"), status: bad},
		{name: "command DEL", body: order("command", "\x7f"), status: bad},
		{name: "command empty", body: order("command", ""), status: bad},
		{name: "command huge", body: order("command", strings.Repeat("c", 5000)), status: large},
		{name: "arg NUL", body: order("args", []string{"a\x00b"}), status: bad},
		{name: "arg ESC", body: order("args", []string{"\x1b]0;x\x07"}), status: bad},
		{name: "env name NUL", body: order("env", map[string]string{"A\x00": "x"}), status: bad},
		{name: "env name with =", body: order("env", map[string]string{"A=B": "x"}), status: bad},
		{name: "env name empty", body: order("env", map[string]string{"": "x"}), status: bad},
		{name: "env name digit", body: order("env", map[string]string{"1A": "x"}), status: bad},
		{name: "env name space", body: order("env", map[string]string{"A B": "x"}), status: bad},
		{name: "env value NUL", body: order("env", map[string]string{"A": "x\x00y"}), status: bad},
		{name: "run_as injection", body: order("run_as", "root;id"), status: bad},
		{name: "run_as traversal", body: order("run_as", "../root"), status: bad},
		{name: "run_as space", body: order("run_as", "a b"), status: bad},
		// Sizes.
		{name: "huge body", body: `{"host":"h1","command":"true","args":["` + strings.Repeat("x", 2<<20) + `"]}`, status: large},
		{name: "huge chunked body", body: io.MultiReader(strings.NewReader(`{"host":"h1","command":"true","args":["`),
			strings.NewReader(strings.Repeat("x", 2<<20)), strings.NewReader(`"]}`)), status: large},
		{name: "many args", body: order("args", make([]string, 300)), status: large},
		{name: "long arg", body: order("args", []string{strings.Repeat("a", 65<<10)}), status: large},
		{name: "args total", body: order("args", []string{strings.Repeat("a", 60<<10), strings.Repeat("a", 60<<10),
			strings.Repeat("a", 60<<10), strings.Repeat("a", 60<<10), strings.Repeat("a", 60<<10)}), status: large},
		{name: "many env", body: order("env", nEnv(65, 1)), status: large},
		{name: "long env value", body: order("env", nEnv(1, 9<<10)), status: large},
		{name: "huge stdin", body: order("stdin", map[string]any{"content": base64.StdEncoding.EncodeToString(make([]byte, 600<<10)), "encode": "base64"}), status: large},
		// JSON.
		{name: "truncated", body: `{"host":`, status: bad},
		{name: "lone brace", body: `}`, status: bad},
		{name: "bad literal", body: `nul`, status: bad},
		{name: "array", body: `[]`, status: bad},
		{name: "string", body: `"x"`, status: bad},
		{name: "null", body: `null`, status: bad},
		{name: "trailing object", body: `{"host":"h1","command":"true"} {}`, status: bad},
		{name: "trailing garbage", body: `{"host":"h1","command":"true"}garbage`, status: bad},
		{name: "duplicate key", body: `{"host":"h1","command":"true","command":"rm"}`, status: bad},
		{name: "duplicate host", body: `{"host":"nowhere","command":"true","host":"h1"}`, status: bad},
		{name: "duplicate env name", body: `{"host":"h1","command":"true","env":{"A":"1","A":"2"}}`, status: bad},
		{name: "deep arrays", body: `{"args":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`, status: bad},
		{name: "deep objects", body: strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40), status: bad},
		{name: "unknown field", body: `{"host":"h1","command":"true","shell":true}`, status: bad},
		{name: "unknown stdin field", body: `{"host":"h1","command":"cat","stdin":{"content":"x","file":"/etc/shadow"}}`, status: bad},
		// Wrong types.
		{name: "host number", body: `{"host":1,"command":"true"}`, status: bad},
		{name: "command array", body: `{"host":"h1","command":["rm","-rf"]}`, status: bad},
		{name: "args string", body: `{"host":"h1","command":"ls","args":"-la"}`, status: bad},
		{name: "args numbers", body: `{"host":"h1","command":"ls","args":[1,2]}`, status: bad},
		{name: "env array", body: `{"host":"h1","command":"true","env":["A=1"]}`, status: bad},
		{name: "env number value", body: `{"host":"h1","command":"true","env":{"A":1}}`, status: bad},
		{name: "dry_run string", body: `{"host":"h1","command":"true","dry_run":"true"}`, status: bad},
		{name: "timeout string", body: `{"host":"h1","command":"true","timeout_seconds":"30"}`, status: bad},
		{name: "timeout overflow", body: `{"host":"h1","command":"true","timeout_seconds":1e999}`, status: bad},
		{name: "timeout negative", body: order("timeout_seconds", -1), status: bad},
		{name: "timeout huge", body: order("timeout_seconds", 1e300), status: unproc},
		// Under the millisecond it is stored in, it would read as no
		// timeout: the default, past any rule's max_timeout.
		{name: "timeout under a millisecond", body: order("timeout_seconds", 0.0004), status: bad},
		{name: "correlation NUL", body: order("correlation_id", "a\x00b"), status: bad},
		{name: "correlation long", body: order("correlation_id", strings.Repeat("c", 2900)), status: bad},
		{name: "stdin number", body: `{"host":"h1","command":"cat","stdin":5}`, status: bad},
		{name: "stdin bad base64", body: order("stdin", map[string]any{"content": "!!!", "encode": "base64"}), status: bad},
		{name: "stdout encode", body: order("stdout", map[string]any{"encode": "rot13"}), status: bad},
		// Headers and query.
		{name: "text/plain", body: order(), hdr: []string{"Content-Type", "text/plain"}, status: media},
		{name: "form", body: order(), hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: media},
		{name: "no content type", body: order(), hdr: []string{"Content-Type", ""}, status: media},
		{name: "long idempotency key", body: order(), hdr: []string{"Idempotency-Key", strings.Repeat("k", 201)}, status: bad},
		{name: "idempotency key not UTF-8", body: order(), hdr: []string{"Idempotency-Key", "a\xffb"}, status: bad},
		{name: "wait word", body: order(), hdr: []string{"Prefer", "wait=soon"}, status: bad},
		{name: "wait NaN", path: "/v1/orders?wait=NaN", body: order(), status: bad},
		{name: "wait negative", path: "/v1/orders?wait=-1", body: order(), status: bad},
		{name: "list host a.b", method: "GET", path: "/v1/orders?host=a.b", status: bad},
		{name: "list status", method: "GET", path: "/v1/orders?status=queued,bogus", status: bad},
		{name: "list limit", method: "GET", path: "/v1/orders?limit=100000", status: bad},
		{name: "list cursor", method: "GET", path: "/v1/orders?cursor=..%2F..%2Fetc", status: bad},
		{name: "list since", method: "GET", path: "/v1/orders?since=yesterday", status: bad},
		{name: "list action not UTF-8", method: "GET", path: "/v1/orders?action=%FF", status: bad},
		{name: "list correlation not UTF-8", method: "GET", path: "/v1/orders?correlation=%FF", status: bad},
		{name: "list runbook not UTF-8", method: "GET", path: "/v1/orders?runbook=%FF", status: bad},
		{name: "cancel signal", path: "/v1/orders/0193a5e0-0000-7000-8000-000000000000/cancel", body: `{"signal":"SIGSEGV"}`, status: bad},
		{name: "cancel unknown field", path: "/v1/orders/0193a5e0-0000-7000-8000-000000000000/cancel", body: `{"signal":"SIGTERM","pid":1}`, status: bad},
	}
	codes := map[int]string{bad: "invalid_request", large: "too_large", unproc: "unprocessable", media: "unsupported_media"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, path := cmp.Or(c.method, "POST"), cmp.Or(c.path, "/v1/orders")
			before := s.count(`SELECT count(*) FROM rejections`)
			resp, b := s.send(call{method: method, path: path, body: c.body, token: s.token, hdr: c.hdr})
			wantError(t, resp.StatusCode, b, c.status, codes[c.status])
			if after := s.count(`SELECT count(*) FROM rejections`); after != before+1 {
				t.Fatalf("%d audit rows for one refusal", after-before)
			}
		})
	}
	// NUL and invalid UTF-8 in the path of a refused request: audited all
	// the same (PostgreSQL refuses both bytes in text and jsonb).
	before := s.count(`SELECT count(*) FROM rejections`)
	resp, b := s.send(call{method: "GET", path: "/v1/orders%00%ff"})
	wantError(t, resp.StatusCode, b, http.StatusUnauthorized, "unauthenticated")
	if after := s.count(`SELECT count(*) FROM rejections WHERE path = $1`, "/v1/orders\uFFFD\uFFFD"); after != 1 {
		t.Fatalf("refusal with NUL in the path: %d audit rows (%d before)", after, before)
	}
	// A path that is not a route is a 404 (not audited), never a traversal.
	resp, b = s.send(call{method: "GET", path: "/v1/orders/..%2f..%2fetc%2fpasswd", token: s.token})
	wantError(t, resp.StatusCode, b, 404, "not_found")

	if n := s.count(`SELECT count(*) FROM orders`); n != 0 {
		t.Fatalf("%d orders stored from hostile requests", n)
	}
	if got := ran(t, marker); got != "" {
		t.Fatal("something ran")
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("touch ran")
	}
	rows := s.checkAudit(s.token)
	for _, r := range rows {
		if r.Principal != "admin" && r.Code != "unauthenticated" || r.ClientIP != "127.0.0.1" {
			t.Fatalf("audit row %d: principal %q, client_ip %q", r.ID, r.Principal, r.ClientIP)
		}
		// A refusal for size does not store the oversized input.
		if len(r.Row) > 16<<10 {
			t.Fatalf("audit row %d (%s) is %d bytes", r.ID, r.Reason, len(r.Row))
		}
	}
	s.assertReady(nil)
}

// envInjectionNames is every name of the default env_deny list, with
// prefixes completed and in other cases, as a request would spell them.
func envInjectionNames() []string {
	var names []string
	for _, e := range config.DefaultEnvDeny() {
		if p, ok := strings.CutSuffix(e, "*"); ok {
			names = append(names, p+"PRELOAD", strings.ToLower(p)+"x")
			continue
		}
		names = append(names, e)
		if strings.ToLower(e) != e {
			names = append(names, strings.ToLower(e))
		}
	}
	return names
}

// TestSecurityEnvInjection sets each denied variable. The API may refuse or
// the worker reject; either way the command never runs and the value is
// never stored.
func TestSecurityEnvInjection(t *testing.T) {
	s := newSecStack(t, "", nil, "h1")
	marker := filepath.Join(t.TempDir(), "marker")
	var values []string
	for i, name := range envInjectionNames() {
		t.Run(name, func(t *testing.T) {
			v := fmt.Sprintf("/tmp/injected-value-%d.so", i)
			values = append(values, v)
			r := s.submitRefused(map[string]any{"host": "h1", "command": "touch", "args": []string{marker},
				"env": map[string]string{name: v}})
			if r.code == "" && !strings.Contains(*r.order.Result.Error, "env") {
				t.Fatalf("rejected, but not for the environment: %s", *r.order.Result.Error)
			}
		})
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("a command with an injected environment ran")
	}
	for _, v := range values {
		if n := s.count(`SELECT count(*) FROM orders o WHERE o::text LIKE '%' || $1 || '%'`, v); n != 0 {
			t.Fatalf("env value %s stored in orders", v)
		}
		if n := s.count(`SELECT count(*) FROM order_events e WHERE e::text LIKE '%' || $1 || '%'`, v); n != 0 {
			t.Fatalf("env value %s stored in order_events", v)
		}
	}
	s.checkAudit(append(values, s.token)...)
	s.assertReady(nil)
}

// TestSecurityEnvAllowList: with worker.env_allow, a name that no deny
// list knows (a hook of some program) is refused up front, a listed one
// reaches the command.
func TestSecurityEnvAllowList(t *testing.T) {
	s := newSecStack(t, "worker:\n  env_allow: [GREETING]\n", nil, "h1")
	marker := filepath.Join(t.TempDir(), "marker")
	r := s.submitRefused(map[string]any{"host": "h1", "command": "touch", "args": []string{marker},
		"env": map[string]string{"SOME_PROGRAMS_HOOK": "/tmp/x"}})
	if r.code != "forbidden" {
		t.Fatalf("a name outside env_allow: %+v", r)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("a command with a name outside env_allow ran")
	}
	o := s.submit(map[string]any{"host": "h1", "command": "env", "env": map[string]string{"GREETING": "hello"}}, "?wait=30", http.StatusOK)
	if o.Status != "succeeded" || o.Result == nil || !strings.Contains(o.Result.Stdout.Content, "GREETING=hello\n") {
		t.Fatalf("a listed name: %s %+v", o.Status, o.Result)
	}
}

// TestSecurityForbiddenCharacters configures Vigrid's 12 characters: an
// argument or command holding one is rejected by the worker and nothing
// is created.
func TestSecurityForbiddenCharacters(t *testing.T) {
	s := newSecStack(t, "worker:\n  forbidden_chars: "+vigridForbidden+"\n", nil, "h1")
	dir := t.TempDir()
	for _, c := range vigridDefaultForbidden {
		t.Run(string(c), func(t *testing.T) {
			r := s.submitRefused(map[string]any{"host": "h1", "command": "touch", "args": []string{filepath.Join(dir, "x"+string(c)+"y")}})
			if r.code == "" && !strings.Contains(*r.order.Result.Error, "forbids") {
				t.Fatalf("rejected, but not for the character: %s", *r.order.Result.Error)
			}
			s.submitRefused(map[string]any{"host": "h1", "command": "touch" + string(c), "args": []string{filepath.Join(dir, "z")}})
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files were created: %v", entries)
	}
	// touch itself works here.
	ok := filepath.Join(dir, "ok")
	if o := s.submit(map[string]any{"host": "h1", "command": "touch", "args": []string{ok}}, "?wait=30", http.StatusOK); o.Status != "succeeded" {
		t.Fatalf("plain touch: %s", o.Status)
	}
	if _, err := os.Stat(ok); err != nil {
		t.Fatal(err)
	}
	s.checkAudit(s.token)
	s.assertReady(nil)
}

// TestSecurityJWTAttacks configures HS256 and sends the classic attacks:
// each is a 401 unauthenticated, audited without the token.
func TestSecurityJWTAttacks(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef-test"
	s := newSecStack(t, "", map[string]any{"auth.jwt.algorithm": "HS256", "auth.jwt.secret": secret,
		"auth.jwt.issuer": "https://idp.example/", "auth.jwt.audience": "orderly", "auth.jwt.leeway": "5s"})
	now := time.Now()
	claims := func(kv ...any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "roles": []string{"admin"}, "iss": "https://idp.example/",
			"aud": "orderly", "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix()}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	b64 := func(v any) string {
		j, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(j)
	}
	valid := sign(jwt.SigningMethodHS256, []byte(secret), claims())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64(claims("sub", "root", "roles", []string{"admin", "superuser"})) + "." + parts[2]

	// The valid token works, so the refusals below are the attacks'.
	resp, b := s.send(call{method: "GET", path: "/v1/orders", token: valid})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("valid JWT: %d %s", resp.StatusCode, b)
	}

	attacks := []struct{ name, header string }{
		{"alg none", "Bearer " + sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims())},
		{"alg none with a signature", "Bearer " + b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + parts[1] + "." + parts[2]},
		{"alg None", "Bearer " + b64(map[string]string{"alg": "None"}) + "." + parts[1] + "."},
		{"alg hs256 lower case", "Bearer " + b64(map[string]string{"alg": "hs256"}) + "." + parts[1] + "." + parts[2]},
		{"HS512 with the secret", "Bearer " + sign(jwt.SigningMethodHS512, []byte(secret), claims())},
		{"HS384 with the secret", "Bearer " + sign(jwt.SigningMethodHS384, []byte(secret), claims())},
		{"RS256 with a foreign key", "Bearer " + sign(jwt.SigningMethodRS256, rsaKey, claims())},
		{"wrong secret", "Bearer " + sign(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), claims())},
		{"tampered claims", "Bearer " + tampered},
		{"signature stripped", "Bearer " + parts[0] + "." + parts[1] + "."},
		{"expired", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("exp", now.Add(-time.Hour).Unix()))},
		{"no exp", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("exp", nil))},
		{"exp as string", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("exp", "9999999999"))},
		{"exp ten years out", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("exp", now.AddDate(10, 0, 0).Unix()))},
		{"issued two years ago, exp in a minute", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("iat", now.AddDate(-2, 0, 0).Unix(), "exp", now.Add(time.Minute).Unix()))},
		{"not yet valid", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("nbf", now.Add(time.Hour).Unix()))},
		{"wrong issuer", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("iss", "https://evil.example/"))},
		{"no issuer", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("iss", nil))},
		{"wrong audience", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("aud", "other"))},
		{"no audience", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("aud", nil))},
		{"no subject", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("sub", nil))},
		{"control bytes in subject", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("sub", "admin\x00"))},
		{"roles as number", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("roles", 7))},
		{"oversized", "Bearer " + sign(jwt.SigningMethodHS256, []byte(secret), claims("pad", strings.Repeat("p", 9<<10)))},
		{"malformed base64", "Bearer " + "e30.!!!.e30"},
		{"four parts", "Bearer " + valid + ".x"},
		{"header is not JSON", "Bearer " + base64.RawURLEncoding.EncodeToString([]byte("{{{")) + "." + parts[1] + "." + parts[2]},
		{"Basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:admin"))},
		{"no credential", "Bearer "},
		{"space in credential", "Bearer " + parts[0] + " " + parts[1]},
		{"static token lookalike", "Bearer ord_" + strings.Repeat("A", 43)},
	}
	var secrets []string
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			before := s.count(`SELECT count(*) FROM rejections`)
			resp, b := s.send(call{method: "GET", path: "/v1/orders", hdr: []string{"Authorization", a.header}})
			wantError(t, resp.StatusCode, b, http.StatusUnauthorized, "unauthenticated")
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if after := s.count(`SELECT count(*) FROM rejections`); after != before+1 {
				t.Fatalf("%d audit rows", after-before)
			}
		})
		if _, cred, ok := strings.Cut(a.header, " "); ok && len(cred) > 20 {
			secrets = append(secrets, cred[len(cred)-20:])
		}
	}
	rows := s.checkAudit(append(secrets, valid[len(valid)-20:], secret)...)
	for _, r := range rows {
		if r.Principal != "" || r.Code != "unauthenticated" {
			t.Fatalf("audit row %d: principal %q code %q", r.ID, r.Principal, r.Code)
		}
	}
	s.assertReady(nil)
}

// TestSecurityRateLimits bursts past the per-principal and per-IP limits:
// 429 with Retry-After, the IP limit applies before authentication, and a
// spoofed X-Forwarded-For from an untrusted peer does not reset it.
func TestSecurityRateLimits(t *testing.T) {
	monitor, monitorSum := auth.NewToken()
	file := func(perIP, perPrincipal int) string {
		return fmt.Sprintf(`limits:
  rate_per_ip: %d
  rate_per_principal: %d
auth:
  tokens:
    - name: monitor
      sha256: %q
      roles: [readonly]
`, perIP, perPrincipal, monitorSum)
	}
	// Refill: one token per 10s per address, per 20s per principal; the
	// sequence below takes far less.
	s := newSecStack(t, file(6, 3), nil)
	get := func(token string, hdr ...string) (*http.Response, []byte) {
		return s.send(call{method: "GET", path: "/v1/hosts", token: token, hdr: hdr})
	}
	limited := func(resp *http.Response, b []byte, scope string, maxWait int) {
		t.Helper()
		wantError(t, resp.StatusCode, b, http.StatusTooManyRequests, "rate_limited")
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > maxWait {
			t.Fatalf("Retry-After = %q, want 1..%d seconds", resp.Header.Get("Retry-After"), maxWait)
		}
		var e api.ErrorBody
		_ = json.Unmarshal(b, &e)
		if e.Error.Details["scope"] != scope {
			t.Fatalf("scope = %v, want %s: %s", e.Error.Details["scope"], scope, b)
		}
	}
	for i := range 3 {
		if resp, b := get(s.token); resp.StatusCode != http.StatusOK {
			t.Fatalf("admin request %d: %d %s", i+1, resp.StatusCode, b)
		}
	}
	resp, b := get(s.token)
	limited(resp, b, "principal", 20)
	// Another principal from the same address still has its own allowance.
	if resp, b := get(monitor); resp.StatusCode != http.StatusOK {
		t.Fatalf("monitor: %d %s", resp.StatusCode, b)
	}
	// The sixth request from this address: unauthenticated, still counted.
	resp, b = get("", "X-Forwarded-For", "10.0.0.1")
	wantError(t, resp.StatusCode, b, http.StatusUnauthorized, "unauthenticated")
	// Now the address is out of tokens: 429 before authentication, whatever
	// address the client claims to be.
	resp, b = get("", "X-Forwarded-For", "10.0.0.2")
	limited(resp, b, "ip", 10)
	resp, b = get(monitor, "X-Forwarded-For", "10.0.0.3", "X-Real-IP", "10.0.0.3", "Forwarded", "for=10.0.0.3")
	limited(resp, b, "ip", 10)
	resp, b = s.send(call{method: "POST", path: "/v1/orders", token: "ord_bogus", body: map[string]any{"host": "h1", "command": "true"}})
	limited(resp, b, "ip", 10)
	// Probes are not limited.
	s.assertReady(nil)

	rows := s.checkAudit(s.token, monitor)
	var principal, ip int
	for _, r := range rows {
		if r.ClientIP != "127.0.0.1" {
			t.Fatalf("audit row %d: client_ip %q, want the socket address", r.ID, r.ClientIP)
		}
		if r.Code != "rate_limited" {
			continue
		}
		switch r.Principal {
		case "admin":
			principal++
		case "":
			ip++
		default:
			t.Fatalf("429 audited for principal %q", r.Principal)
		}
	}
	if principal != 1 || ip != 3 {
		t.Fatalf("audited 429s: %d per principal, %d per address; want 1 and 3", principal, ip)
	}

	// A reload that raises the limits applies at once (SIGHUP, as the
	// admin endpoint is itself limited now).
	s.writeConfig(file(1000, 1000))
	if changed, err := s.watcher.Reload(); err != nil || !changed {
		t.Fatalf("reload: %v %v", changed, err)
	}
	// The empty buckets now refill at 1000 a minute: a token within 60ms.
	waitUntil(t, 20*time.Second, "a request after raising the limits", func() bool {
		resp, _ := get(s.token)
		return resp.StatusCode == http.StatusOK
	})
}

// TestSecurityACLForwardedFor denies 127.0.0.1: a client there is refused
// before authentication whatever X-Forwarded-For it sends; a trusted proxy
// (127.0.0.2) is believed, from the right, for the ACL and the rate limit.
func TestSecurityACLForwardedFor(t *testing.T) {
	s := newSecStack(t, `acl:
  deny: [127.0.0.1/32, 10.9.9.9/32]
  trusted_proxies: [127.0.0.2/32]
limits:
  rate_per_ip: 2
`, nil)
	proxy := clientFrom("127.0.0.2")
	direct := func(token string, hdr ...string) (*http.Response, []byte) {
		return s.send(call{method: "GET", path: "/v1/hosts", token: token, hdr: hdr})
	}
	viaProxy := func(xff string) (*http.Response, []byte) {
		return s.send(call{method: "GET", path: "/v1/hosts", token: s.token, hdr: []string{"X-Forwarded-For", xff}, client: proxy})
	}
	for _, c := range []struct {
		name  string
		token string
		hdr   []string
	}{
		{"with token", s.token, nil},
		{"without token", "", nil},
		{"spoofed XFF", s.token, []string{"X-Forwarded-For", "10.1.1.1"}},
		{"spoofed proxy chain", s.token, []string{"X-Forwarded-For", "10.1.1.1, 127.0.0.2"}},
		{"spoofed X-Real-IP and Forwarded", s.token, []string{"X-Real-IP", "10.1.1.1", "Forwarded", "for=10.1.1.1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, b := direct(c.token, c.hdr...)
			wantError(t, resp.StatusCode, b, http.StatusForbidden, "forbidden")
		})
	}
	if resp, b := viaProxy("10.9.9.9"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied client through the proxy: %d %s", resp.StatusCode, b)
	}
	// Only the right-most untrusted hop counts: the client wrote the rest.
	if resp, b := viaProxy("10.9.9.9, 10.2.2.2"); resp.StatusCode != http.StatusOK {
		t.Fatalf("client 10.2.2.2 through the proxy: %d %s", resp.StatusCode, b)
	}
	// Rate limits follow the forwarded client.
	for range 2 {
		if resp, b := viaProxy("10.1.1.1"); resp.StatusCode != http.StatusOK {
			t.Fatalf("10.1.1.1: %d %s", resp.StatusCode, b)
		}
	}
	resp, b := viaProxy("10.1.1.1")
	wantError(t, resp.StatusCode, b, http.StatusTooManyRequests, "rate_limited")
	if resp, b := viaProxy("10.1.1.2"); resp.StatusCode != http.StatusOK {
		t.Fatalf("10.1.1.2 limited by 10.1.1.1's bucket: %d %s", resp.StatusCode, b)
	}

	rows := s.checkAudit(s.token)
	want := []struct{ ip, code string }{
		{"127.0.0.1", "forbidden"}, {"127.0.0.1", "forbidden"}, {"127.0.0.1", "forbidden"}, {"127.0.0.1", "forbidden"},
		{"127.0.0.1", "forbidden"}, {"10.9.9.9", "forbidden"}, {"10.1.1.1", "rate_limited"},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d audit rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		if rows[i].ClientIP != w.ip || rows[i].Code != w.code || rows[i].Principal != "" && w.code == "forbidden" {
			t.Fatalf("audit row %d = %+v, want client %s code %s", i, rows[i], w.ip, w.code)
		}
	}
	if !strings.Contains(rows[0].Reason, "127.0.0.1") {
		t.Fatalf("reason does not name the address: %q", rows[0].Reason)
	}
	s.assertReady(proxy)
}

// TestSecurityPolicyBypassRunAsDryRun checks the API policy: a deny rule
// on "^shutdown" also stops absolute spellings, run_as is limited to the
// rule's users, and dry runs return the trace without executing.
func TestSecurityPolicyBypassRunAsDryRun(t *testing.T) {
	auditor, auditorSum := auth.NewToken()
	s := newSecStack(t, fmt.Sprintf(`worker:
  # Belt and braces: this machine has /sbin/shutdown.
  deny: ['shutdown|reboot|poweroff|halt']
  allowed_users: [nobody]
auth:
  tokens:
    - name: auditor
      sha256: %q
      roles: [auditor]
policy:
  - name: ops
    roles: [admin]
    hosts: ["*"]
    allow: ['.*']
    deny: ['^shutdown', '^reboot']
    run_as: [default, nobody]
  - name: audit-dry
    principals: [auditor]
    hosts: ["*"]
    allow: ['^touch( |$)']
    dry_run_only: true
`, auditorSum), nil, "p1")
	denied := func(resp *http.Response, b []byte, matched string) {
		t.Helper()
		wantError(t, resp.StatusCode, b, http.StatusForbidden, "forbidden")
		var e struct {
			Error struct {
				Details struct {
					Policy struct {
						Decision string   `json:"decision"`
						Matched  []string `json:"matched"`
					} `json:"policy"`
				} `json:"details"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		p := e.Error.Details.Policy
		if p.Decision != "deny" || !slices.Contains(p.Matched, matched) {
			t.Fatalf("policy trace = %+v, want deny with %s", p, matched)
		}
	}
	// No worker serves host "nowhere": should a deny fail, nothing runs.
	for _, cmd := range []string{"shutdown", "/sbin/shutdown", "/usr/sbin/shutdown", "//usr//sbin//shutdown",
		"/sbin/./shutdown", "/usr/bin/../sbin/shutdown", "sbin/shutdown", "../../sbin/shutdown"} {
		t.Run(cmd, func(t *testing.T) {
			resp, b := s.send(call{method: "POST", path: "/v1/orders", token: s.token,
				body: map[string]any{"host": "nowhere", "command": cmd, "args": []string{"-h", "now"}}})
			denied(resp, b, "ops:deny:^shutdown")
			resp, b = s.send(call{method: "POST", path: "/v1/orders", token: s.token,
				body: map[string]any{"host": "nowhere", "command": cmd, "dry_run": true}})
			denied(resp, b, "ops:deny:^shutdown")
		})
	}
	resp, b := s.send(call{method: "POST", path: "/v1/orders", token: s.token, body: map[string]any{"host": "nowhere", "command": "/sbin/reboot"}})
	denied(resp, b, "ops:deny:^reboot")

	// run_as: only the rule's users.
	for _, user := range []string{"root", "daemon", "0", "65534"} {
		resp, b := s.send(call{method: "POST", path: "/v1/orders", token: s.token,
			body: map[string]any{"host": "p1", "command": "id", "run_as": user}})
		denied(resp, b, "ops:refused:run_as="+user)
	}
	if n := s.count(`SELECT count(*) FROM orders`); n != 0 {
		t.Fatalf("%d orders stored from denied requests", n)
	}
	o := s.submit(map[string]any{"host": "p1", "command": "id", "args": []string{"-un"}, "run_as": "nobody"}, "?wait=30", http.StatusOK)
	if o.Status != "succeeded" || o.Result.Stdout.Content != "nobody\n" {
		t.Fatalf("run_as nobody: %s %+v", o.Status, o.Result)
	}

	// Dry runs: the whole pipeline and the trace, no execution.
	marker := filepath.Join(t.TempDir(), "marker")
	o = s.submit(map[string]any{"host": "p1", "command": "touch", "args": []string{marker}, "dry_run": true}, "?wait=30", http.StatusOK)
	if o.Status != "succeeded" || o.Policy.Decision != "allow" || !slices.Contains(o.Policy.Matched, "ops:allow:.*") {
		t.Fatalf("dry run: %s %+v", o.Status, o.Policy)
	}
	if o.Result != nil && (o.Result.ExitCode != nil || o.Result.Stdout.Bytes != 0) {
		t.Fatalf("dry run has a process result: %+v", o.Result)
	}
	// dry_run_only: the auditor's real order is refused, its dry run allowed.
	resp, b = s.send(call{method: "POST", path: "/v1/orders", token: auditor, body: map[string]any{"host": "p1", "command": "touch", "args": []string{marker}}})
	denied(resp, b, "audit-dry:refused:dry_run_only")
	resp, b = s.send(call{method: "POST", path: "/v1/orders?wait=30", token: auditor,
		body: map[string]any{"host": "p1", "command": "touch", "args": []string{marker}, "dry_run": true}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("auditor dry run: %d %s", resp.StatusCode, b)
	}
	var ao api.Order
	_ = json.Unmarshal(b, &ao)
	if ao.Status != "succeeded" || !slices.Contains(ao.Policy.Matched, "audit-dry:allow:^touch( |$)") {
		t.Fatalf("auditor dry run: %s %+v", ao.Status, ao.Policy)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("a dry run executed")
	}
	rows := s.checkAudit(s.token, auditor)
	if len(rows) != 8*2+1+4+1 {
		t.Fatalf("%d audit rows, want %d", len(rows), 8*2+1+4+1)
	}
	for _, r := range rows {
		if r.Code != "forbidden" || !strings.HasPrefix(r.Reason, "policy: ") || !strings.Contains(r.Request, `"command"`) {
			t.Fatalf("audit row %+v", r)
		}
	}
	s.assertReady(nil)
}

// TestSecurityReloadAndDrift edits the config file under a running API:
// the drift shows on /v1/status and /readyz while the loaded config keeps
// serving; POST /v1/admin/reload (admin only) applies a valid file and
// refuses an invalid one with 422, keeping the running config.
func TestSecurityReloadAndDrift(t *testing.T) {
	monitor, monitorSum := auth.NewToken()
	file := func(extra string) string {
		return fmt.Sprintf(`auth:
  tokens:
    - name: monitor
      sha256: %q
      roles: [readonly]
%s`, monitorSum, extra)
	}
	s := newSecStack(t, file(""), map[string]any{"config_check_interval": "50ms"}, "h1")
	reload := func(token string) (*http.Response, []byte) {
		return s.send(call{method: "POST", path: "/v1/admin/reload", token: token})
	}
	type statusView struct {
		Config struct {
			Drift           bool   `json:"drift"`
			PendingError    string `json:"pending_error"`
			LastReloadError string `json:"last_reload_error"`
			SHA256Loaded    string `json:"sha256_loaded"`
		} `json:"config"`
		ConfigDrift bool `json:"config_drift"`
	}
	status := func() statusView {
		resp, b := s.send(call{method: "GET", path: "/v1/status", token: s.token})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status: %d %s", resp.StatusCode, b)
		}
		var st statusView
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	readyDrift := func() bool {
		resp, b := s.send(call{method: "GET", path: "/readyz"})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz = %d: %s", resp.StatusCode, b)
		}
		var r struct {
			Drift bool `json:"config_drift"`
		}
		_ = json.Unmarshal(b, &r)
		return r.Drift
	}
	threeArgs := map[string]any{"host": "h1", "command": "true", "args": []string{"a", "b", "c"}}

	resp, b := reload(monitor)
	wantError(t, resp.StatusCode, b, http.StatusForbidden, "forbidden")
	resp, b = reload(s.token)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"changed":false`) {
		t.Fatalf("reload of the same file: %d %s", resp.StatusCode, b)
	}

	// A valid edit: reported as drift, not applied.
	s.writeConfig(file("limits:\n  max_args: 2\n"))
	waitUntil(t, 10*time.Second, "drift on /v1/status", func() bool { return status().Config.Drift })
	if !readyDrift() {
		t.Fatal("/readyz does not report the drift")
	}
	if st := status(); st.Config.PendingError != "" || !st.ConfigDrift {
		t.Fatalf("status = %+v", st)
	}
	s.submit(threeArgs, "", http.StatusAccepted) // still the loaded config
	resp, b = reload(s.token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %d %s", resp.StatusCode, b)
	}
	var rr struct {
		Changed     bool     `json:"changed"`
		ChangedKeys []string `json:"changed_keys"`
	}
	if err := json.Unmarshal(b, &rr); err != nil || !rr.Changed || !slices.Equal(rr.ChangedKeys, []string{"limits.max_args"}) {
		t.Fatalf("reload answer: %s", b)
	}
	if status().Config.Drift || readyDrift() {
		t.Fatal("drift not cleared by the reload")
	}
	resp, b = s.send(call{method: "POST", path: "/v1/orders", token: s.token, body: threeArgs})
	wantError(t, resp.StatusCode, b, http.StatusRequestEntityTooLarge, "too_large")
	loaded := status().Config.SHA256Loaded

	// Invalid files: refused with the reasons; the running config stays.
	for _, c := range []struct {
		name, text, key string
	}{
		{"syntax", file("limits: [unclosed\n"), ""},
		{"unknown key", file("limits:\n  max_argz: 2\n"), ""},
		{"validation", file("limits:\n  max_args: 0\n"), "limits.max_args"},
		{"bad regex", file("policy:\n  - name: x\n    roles: [admin]\n    hosts: ['*']\n    allow: ['(']\n"), "policy[0].allow[0]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.writeConfig(c.text)
			waitUntil(t, 10*time.Second, "pending error", func() bool { st := status(); return st.Config.Drift && st.Config.PendingError != "" })
			resp, b := reload(s.token)
			wantError(t, resp.StatusCode, b, http.StatusUnprocessableEntity, "unprocessable")
			if c.key != "" {
				if ps := reloadProblems(b); len(ps) == 0 || ps[0].Key != c.key {
					t.Fatalf("problems = %+v, want key %s: %s", ps, c.key, b)
				}
			}
			st := status()
			if st.Config.SHA256Loaded != loaded || st.Config.LastReloadError == "" || !st.Config.Drift {
				t.Fatalf("after a refused reload: %+v", st)
			}
			// Still serving, with the last good config.
			if o := s.submit(map[string]any{"host": "h1", "command": "true"}, "?wait=30", http.StatusOK); o.Status != "succeeded" {
				t.Fatalf("order after a refused reload: %s", o.Status)
			}
			resp, b = s.send(call{method: "POST", path: "/v1/orders", token: s.token, body: threeArgs})
			wantError(t, resp.StatusCode, b, http.StatusRequestEntityTooLarge, "too_large")
			s.assertReady(nil)
		})
	}
	// SIGHUP's path refuses the same way.
	if _, err := s.watcher.Reload(); err == nil {
		t.Fatal("watcher reloaded an invalid file")
	}
	// Putting the loaded file back clears the drift.
	s.writeConfig(file("limits:\n  max_args: 2\n"))
	waitUntil(t, 10*time.Second, "drift cleared", func() bool { return !status().Config.Drift })

	rows := s.checkAudit(s.token, monitor)
	var codes []string
	for _, r := range rows {
		codes = append(codes, r.Code)
	}
	want := []string{"forbidden", "too_large"}
	for range 4 {
		want = append(want, "unprocessable", "too_large")
	}
	if !slices.Equal(codes, want) {
		t.Fatalf("audited codes = %v, want %v", codes, want)
	}

	// A file that validates but a part cannot build (the worker's host
	// policy): refused with that part named in the problems.
	s.writeConfig(file("worker:\n  exec_root: /srv/orderly-none\n  command_path: [/usr/bin]\n"))
	resp, b = reload(s.token)
	wantError(t, resp.StatusCode, b, http.StatusUnprocessableEntity, "unprocessable")
	if ps := reloadProblems(b); len(ps) != 1 || ps[0].Key != "worker host policy" || !strings.Contains(ps[0].Message, "outside worker.exec_root") {
		t.Fatalf("problems of a part's refusal: %s", b)
	}
	s.assertReady(nil)
}

// reloadProblems are the details.problems of a refused reload's answer.
func reloadProblems(b []byte) []config.Problem {
	var e struct {
		Error struct {
			Details struct {
				Problems []config.Problem `json:"problems"`
			} `json:"details"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Error.Details.Problems
}

// TestSecurityChildEnvironment runs env through the API: the child sees
// the clean environment the host policy builds plus the order's variables,
// never anything of the worker's own environment.
func TestSecurityChildEnvironment(t *testing.T) {
	const canary = "canary-b7e1d0"
	t.Setenv("ORDERLY_TEST_CANARY", canary)
	t.Setenv("CANARY_SECRET", canary)
	s := newSecStack(t, "", nil, "h1")
	for _, cmd := range []string{"env", "/usr/bin/env"} {
		o := s.submit(map[string]any{"host": "h1", "command": cmd, "env": map[string]string{"GREETING": "hello"}}, "?wait=30", http.StatusOK)
		if o.Status != "succeeded" {
			t.Fatalf("%s: %s %+v", cmd, o.Status, o.Result)
		}
		out := o.Result.Stdout.Content
		if strings.Contains(out, canary) || strings.Contains(out, "CANARY") {
			t.Fatalf("the worker's environment leaked into the child:\n%s", out)
		}
		var names []string
		vars := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(line, "=")
			names = append(names, k)
			vars[k] = v
		}
		slices.Sort(names)
		if want := []string{"GREETING", "HOME", "LANG", "LOGNAME", "PATH", "USER"}; !slices.Equal(names, want) {
			t.Fatalf("child environment names = %v, want %v:\n%s", names, want, out)
		}
		if vars["GREETING"] != "hello" || vars["LANG"] != "C.UTF-8" ||
			vars["PATH"] != strings.Join(s.watcher.Current().Worker.CommandPath, ":") {
			t.Fatalf("child environment:\n%s", out)
		}
	}
	if n := s.count(`SELECT count(*) FROM orders WHERE env::text LIKE '%hello%'`); n != 0 {
		t.Fatal("env value stored")
	}
	s.assertReady(nil)
}

// TestSecurityReloadTightensWorkerPolicy: a reloaded worker section applies
// to the next order without a restart; an invalid one is refused and the
// running policy stays.
func TestSecurityReloadTightensWorkerPolicy(t *testing.T) {
	s := newSecStack(t, "worker:\n  deny: []\n", nil, "h1")
	if o := s.submit(map[string]any{"host": "h1", "command": "echo", "args": []string{"before"}}, "?wait=20", http.StatusOK); o.Status != "succeeded" {
		t.Fatalf("before reload: %s", o.Status)
	}
	s.writeConfig("worker:\n  deny: ['^echo( |$)']\n")
	if resp, b := s.send(call{method: "POST", path: "/v1/admin/reload", token: s.token}); resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %d %s", resp.StatusCode, b)
	}
	o := s.submit(map[string]any{"host": "h1", "command": "echo", "args": []string{"after"}}, "?wait=20", http.StatusOK)
	if o.Status != "rejected" {
		t.Fatalf("after reload: %s, want rejected by the worker", o.Status)
	}
	s.writeConfig("worker:\n  deny: ['(unclosed']\n")
	if resp, b := s.send(call{method: "POST", path: "/v1/admin/reload", token: s.token}); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("invalid reload: %d %s", resp.StatusCode, b)
	}
	if o := s.submit(map[string]any{"host": "h1", "command": "echo"}, "?wait=20", http.StatusOK); o.Status != "rejected" {
		t.Fatalf("after the refused reload: %s, want the tightened policy kept", o.Status)
	}
}

// TestSecurityReadsAreScoped: a principal without the admin or auditor
// role reads only its own orders; others' are "not found" everywhere.
func TestSecurityReadsAreScoped(t *testing.T) {
	monitor, monitorSum := auth.NewToken()
	auditor, auditorSum := auth.NewToken()
	yaml := fmt.Sprintf(`auth:
  tokens:
    - {name: monitor, sha256: %q, roles: [readonly]}
    - {name: auditor, sha256: %q, roles: [auditor]}
policy:
  - {name: admin, roles: [admin], hosts: ["*"], allow: [".*"], run_as: ["", "*"]}
  - {name: monitor, roles: [readonly], hosts: ["*"], allow: ["^uptime$"]}
`, monitorSum, auditorSum)
	s := newSecStack(t, yaml, nil, "h1")
	mine := s.submit(map[string]any{"host": "h1", "command": "echo", "args": []string{"admin secret"}}, "?wait=20", http.StatusOK)
	get := func(token, path string) (int, []byte) {
		resp, b := s.send(call{method: "GET", path: path, token: token})
		return resp.StatusCode, b
	}
	resp, b := s.send(call{method: "POST", path: "/v1/orders?wait=20", token: monitor, body: map[string]any{"host": "h1", "command": "uptime"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("monitor submit: %d %s", resp.StatusCode, b)
	}
	var theirs api.Order
	_ = json.Unmarshal(b, &theirs)

	for _, path := range []string{"/v1/orders/" + mine.ID.String(), "/v1/orders/" + mine.ID.String() + "/events"} {
		if code, b := get(monitor, path); code != http.StatusNotFound {
			t.Fatalf("monitor GET %s = %d: %s", path, code, b)
		}
	}
	if resp, b := s.send(call{method: "POST", path: "/v1/orders/" + mine.ID.String() + "/cancel", token: monitor}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("monitor cancel of admin's order = %d: %s", resp.StatusCode, b)
	}
	for _, q := range []string{"/v1/orders", "/v1/orders?principal=admin", "/v1/hosts/h1"} {
		code, b := get(monitor, q)
		if code != http.StatusOK || strings.Contains(string(b), "admin secret") || strings.Contains(string(b), mine.ID.String()) {
			t.Fatalf("monitor %s = %d leaks the admin's order: %s", q, code, b)
		}
	}
	if code, b := get(monitor, "/v1/orders/"+theirs.ID.String()); code != http.StatusOK {
		t.Fatalf("monitor reading its own order = %d: %s", code, b)
	}
	for _, token := range []string{s.token, auditor} {
		code, b := get(token, "/v1/orders?limit=10")
		if code != http.StatusOK || !strings.Contains(string(b), mine.ID.String()) || !strings.Contains(string(b), theirs.ID.String()) {
			t.Fatalf("admin/auditor list = %d: %s", code, b)
		}
	}
}

// TestSecuritySharedRateLimit: with limits.rate_shared, two API replicas
// count one principal's requests together.
func TestSecuritySharedRateLimit(t *testing.T) {
	s := newStackFrom(t, "", map[string]any{"limits.rate_shared": "true", "limits.rate_per_principal": "5"})
	other := s.replica()
	// Shared counters use fixed windows on the minute: seven requests
	// that straddle one would start counting again.
	if left := time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)); left < 10*time.Second {
		time.Sleep(left + 100*time.Millisecond)
	}
	for i := range 5 {
		target := s
		if i%2 == 1 {
			target = other
		}
		if code, b := target.do("GET", "/v1/orders", nil); code != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, code, b)
		}
	}
	for _, target := range []*stack{s, other} {
		code, b := target.do("GET", "/v1/orders", nil)
		wantError(t, code, b, http.StatusTooManyRequests, "rate_limited")
	}
}
