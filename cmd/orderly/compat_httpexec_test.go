package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// httpexecRoot is an EXEC_ROOT for the httpexec tests: real copies of
// harmless tools (a symlink to /bin/cat would resolve outside the root),
// scripts, a subdirectory, links inside and out, a directory and a file
// without an execute bit. outside holds a tool outside the root.
type httpexecRoot struct {
	root, outside string
}

func newHTTPExecRoot(t *testing.T) httpexecRoot {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := httpexecRoot{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{h.root, filepath.Join(h.root, "sub"), filepath.Join(h.root, "adir"), h.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyTool(t, "cat", filepath.Join(h.root, "cat"))
	copyTool(t, "echo", filepath.Join(h.root, "echo"))
	copyTool(t, "env", filepath.Join(h.root, "env"))
	copyTool(t, "echo", filepath.Join(h.root, "sub", "echo"))
	copyTool(t, "echo", filepath.Join(h.outside, "tool"))
	scripts := map[string]string{
		"fail":     "#!/bin/sh\necho out; echo err >&2; exit 2\n",
		"binary":   "#!/bin/sh\nprintf 'ok\\377\\000'\n",
		"selfkill": "#!/bin/sh\nkill -TERM $$\n",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(h.root, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.root, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(h.root, "echo"), filepath.Join(h.root, "inlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(h.outside, "tool"), filepath.Join(h.root, "outlink")); err != nil {
		t.Fatal(err)
	}
	return h
}

// httpexecConfig enables the surface for principal httpexec-client on
// host hx, reachable from loopback only; the worker's command_path holds
// the root and its subdirectory (the worker checks every order itself).
func httpexecConfig(h httpexecRoot, followLinks bool) string {
	return fmt.Sprintf(`
acl:
  allow: ["127.0.0.1/32", "::1/128"]
policy:
  - name: httpexec
    principals: [httpexec-client]
    hosts: [hx]
    allow: [".*"]
worker:
  command_path: [%q, %q]
compat:
  httpexec:
    enabled: true
    host: hx
    exec_root: %q
    follow_links: %t
    principal: httpexec-client
`, h.root, filepath.Join(h.root, "sub"), h.root, followLinks)
}

// httpexecPost is a plain client speaking httpexec: POST /<path> with a
// JSON body (or raw bytes with the given content type).
func httpexecPost(t *testing.T, base, path, contentType string, body any) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+path, requestBody(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// httpexecResult is the original's response, decoded loosely so that null
// and absent can be told apart.
type httpexecResult struct {
	Return *int            `json:"return"`
	Stdout json.RawMessage `json:"stdout"`
	Stderr json.RawMessage `json:"stderr"`
}

func decodeHTTPExec(t *testing.T, code int, b []byte) httpexecResult {
	t.Helper()
	if code != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", code, b)
	}
	var r httpexecResult
	if err := json.Unmarshal(b, &r); err != nil || r.Return == nil {
		t.Fatalf("not an httpexec response: %v: %s", err, b)
	}
	return r
}

func stream(t *testing.T, raw json.RawMessage) (content string, encode *string) {
	t.Helper()
	if string(raw) == "null" || len(raw) == 0 {
		t.Fatalf("stream is null, want captured")
	}
	var s struct {
		Content string  `json:"content"`
		Encode  *string `json:"encode"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s.Content, s.Encode
}

// TestHTTPExecEncodingsRoundTrip sends binary stdin to cat in base64 and
// in base85 and expects exactly the bytes back, in exactly the text
// Python's base64.b64encode and base64.a85encode produce (z groups, no
// <~ ~>, short final group).
func TestHTTPExecEncodingsRoundTrip(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), nil, "hx")
	cases := []struct {
		name, encode, in string
	}{
		// base64.a85encode(b'\0\0\0\0abc\0\xff\xfe\0\0\0\0\0\0')
		{"base85 zero groups", "base85", "z@:E^Hs8Duuz"},
		// base64.a85encode(b'hello\n')
		{"base85 short final group", "base85", "BOu!rD[H"},
		// base64.a85encode(b'\0\0\0'): a partial zero group is not z
		{"base85 partial zeros", "base85", "!!!!"},
		// base64.a85encode(bytes(range(256)))
		{"base85 every byte", "base85", `!!*-'"9eu7#RLhG$k3[W&.oNg'GVB"(` + "`" + `=52*$$(B+<_pR,UFcb-n-Vr/1iJ-0JP==1c70M3&s#]4?Ykm5X@_(6q'R884cEH9MJ8X:f1+h<)lt#=BSg3>[:ZC?t!MSA7]@cBPD3sCi+'.E,fo>FEMbNG^4U^I!pHnJ:W<)KS>/9Ll%"IN/` + "`" + `jYOHG]iPa.Q$R$jD4S=Q7DTV8*TUnsrdW2ZetXKAY/Yd(L?['d?O\@K2_]Y2%o^qmn*` + "`" + `5Ta:aN;TJbg"GZd*^:jeCE.%f\,!5gtgiEi8N\UjQ5OekiqBum-X60nF?)@o_%qPq"ad` + "`" + `r;HWp`},
		{"base64 binary", "base64", "AAAAAGFiYwD//gAAAAAAAA=="},
		{"base64 empty", "base64", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, b := httpexecPost(t, s.url, "/cat", "application/json", map[string]any{
				"stdin":  map[string]any{"content": c.in, "encode": c.encode},
				"stdout": map[string]any{"capture": true, "encode": c.encode},
			})
			r := decodeHTTPExec(t, code, b)
			content, enc := stream(t, r.Stdout)
			if content != c.in || enc == nil || *enc != c.encode {
				t.Fatalf("stdout = %q (%v), want %q (%s): %s", content, enc, c.in, c.encode, b)
			}
			if string(r.Stderr) != "null" {
				t.Fatalf("uncaptured stderr = %v, want null: %s", r.Stderr, b)
			}
		})
	}
}

// TestHTTPExecResponses covers the response rules: key order, text
// output, captured-and-empty, uncaptured null, non-zero exit with 200,
// signal death as a negative return, args without a shell, environment
// overrides over a clean environment, stdin from /dev/null.
func TestHTTPExecResponses(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), nil, "hx")
	t.Setenv("ORDERLY_TEST_SERVICE_SECRET", "must-not-leak")

	code, hdr, b := httpexecPost(t, s.url, "/echo", "application/json", map[string]any{
		"args": []string{"a b", "$HOME", ";", "*"}, "stdout": map[string]any{"capture": true},
		"stderr": map[string]any{"capture": true, "encode": "base64"}})
	if hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("Content-Type = %q", hdr.Get("Content-Type"))
	}
	// As Quart 0.17's jsonify wrote it: compact, keys sorted, and no
	// newline after it (Flask's added one; Quart's did not).
	want := `{"return":0,"stderr":{"content":"","encode":"base64"},"stdout":{"content":"a b $HOME ; *\n","encode":null}}`
	if code != 200 || string(b) != want {
		t.Fatalf("echo = %d %s, want %s", code, b, want)
	}

	r := httpexecRun(t, s.url, "/fail", map[string]any{"stdout": map[string]any{"capture": true}})
	if *r.Return != 2 {
		t.Fatalf("return = %d, want 2", *r.Return)
	}
	if out, _ := stream(t, r.Stdout); out != "out\n" || string(r.Stderr) != "null" {
		t.Fatalf("fail output = %q / %s", out, r.Stderr)
	}

	r = httpexecRun(t, s.url, "/selfkill", map[string]any{})
	if *r.Return != -15 {
		t.Fatalf("return of a TERM death = %d, want -15", *r.Return)
	}

	r = httpexecRun(t, s.url, "/env", map[string]any{
		"environment": map[string]string{"FOO": "BAR"}, "stdout": map[string]any{"capture": true}})
	env, _ := stream(t, r.Stdout)
	if !strings.Contains(env, "FOO=BAR\n") || strings.Contains(env, "ORDERLY_TEST_SERVICE_SECRET") {
		t.Fatalf("child environment = %q: want FOO=BAR and nothing of the service's", env)
	}
	r = httpexecRun(t, s.url, "/env", map[string]any{"environment": nil, "stdout": map[string]any{"capture": true}})
	if *r.Return != 0 {
		t.Fatalf("environment null: return %d", *r.Return)
	}

	// Output that is not UTF-8 is not lost with encode null: it comes as
	// base64 and says so (httpexec answered 500).
	r = httpexecRun(t, s.url, "/binary", map[string]any{"stdout": map[string]any{"capture": true}})
	if out, enc := stream(t, r.Stdout); out != "b2v/AA==" || enc == nil || *enc != "base64" {
		t.Fatalf("non-UTF-8 text output = %q %v, want base64 b2v/AA==", out, enc)
	}

	// No stdin: the child reads /dev/null and ends, never the service's stdin.
	r = httpexecRun(t, s.url, "/cat", map[string]any{"stdout": map[string]any{"capture": true}})
	if out, enc := stream(t, r.Stdout); out != "" || enc != nil {
		t.Fatalf("cat without stdin = %q %v", out, enc)
	}
	r = httpexecRun(t, s.url, "/cat", map[string]any{"stdin": map[string]any{"content": "text in"},
		"stdout": map[string]any{"capture": true}})
	if out, _ := stream(t, r.Stdout); out != "text in" {
		t.Fatalf("cat of text stdin = %q", out)
	}

	// Every request is an ordinary order of the configured principal.
	code, lb := s.do("GET", "/v1/orders?principal=httpexec-client&host=hx&limit=1000", nil)
	var list struct {
		Orders []struct {
			Source, Principal, Command string
		} `json:"orders"`
	}
	if err := json.Unmarshal(lb, &list); err != nil || code != 200 || len(list.Orders) < 7 {
		t.Fatalf("orders of httpexec-client = %d %s", code, lb)
	}
	for _, o := range list.Orders {
		if o.Source != "httpexec" || !strings.HasPrefix(o.Command, h.root+"/") {
			t.Fatalf("order %+v: want source httpexec and the resolved path", o)
		}
	}
}

// httpexecRun posts a JSON body and decodes the 200 answer.
func httpexecRun(t *testing.T, base, path string, body any) httpexecResult {
	t.Helper()
	code, _, b := httpexecPost(t, base, path, "application/json", body)
	return decodeHTTPExec(t, code, b)
}

// TestHTTPExecRequestQuirks: a JSON body sent as text/plain is ignored
// (the command runs without args), malformed JSON is 400, null args and
// unknown encodings, the original's 500, are Quart's 400 (bad input is
// never a 500 here), and no body is fine.
func TestHTTPExecRequestQuirks(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), nil, "hx")

	code, _, b := httpexecPost(t, s.url, "/echo", "text/plain", `{"args":["x"],"stdout":{"capture":true}}`)
	r := decodeHTTPExec(t, code, b)
	if string(r.Stdout) != "null" {
		t.Fatalf("text/plain body was read: %s", b)
	}
	// Quart's request.is_json: application/json or application/*+json,
	// in any case, with parameters.
	for _, c := range []struct {
		contentType string
		read        bool
	}{
		{"application/json; charset=utf-8", true},
		{"Application/JSON", true},
		{"application/vnd.api+json", true},
		{"application/merge-patch+json", true},
		{"text/json", false},
		{"text/x+json", false},
		{"application/x-json", false},
		{"application/jsonl", false},
	} {
		code, _, b := httpexecPost(t, s.url, "/echo", c.contentType, `{"args":["x"],"stdout":{"capture":true}}`)
		r := decodeHTTPExec(t, code, b)
		if read := string(r.Stdout) != "null"; read != c.read {
			t.Errorf("Content-Type %q: body read %t, want %t: %s", c.contentType, read, c.read, b)
		} else if read {
			if out, _ := stream(t, r.Stdout); out != "x\n" {
				t.Errorf("Content-Type %q: stdout %q, want the args' echo", c.contentType, out)
			}
		}
	}
	for _, c := range []struct {
		name, body string
		want       int
	}{
		{"malformed JSON", `{"args": [`, 400},
		{"not UTF-8", "{\"args\": [\"a\xffb\"]}", 400},
		{"args null", `{"args": null}`, 400},
		{"args not strings", `{"args": [1]}`, 400},
		{"unknown encoding", `{"stdout": {"capture": true, "encode": "rot13"}}`, 400},
		{"short base64 stdin", `{"stdin": {"content": "aGVsbG8", "encode": "base64"}}`, 400},
	} {
		code, hdr, b := httpexecPost(t, s.url, "/echo", "application/json", c.body)
		if code != c.want || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
			t.Errorf("%s: %d %q %s, want %d HTML", c.name, code, hdr.Get("Content-Type"), b, c.want)
		}
	}
	// Refusals httpexec never had are orderly's, in text: a denied
	// environment name as the native API refuses it, a malformed one as
	// bad input.
	for _, c := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"env_deny PATH", map[string]string{"PATH": "/x"}, 403},
		{"env_deny LD_PRELOAD", map[string]string{"LD_PRELOAD": "/x.so"}, 403},
		{"malformed name", map[string]string{"A=B": "x"}, 400},
	} {
		code, hdr, b := httpexecPost(t, s.url, "/env", "application/json", map[string]any{"environment": c.env})
		if code != c.want || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: %d %q %s, want %d text", c.name, code, hdr.Get("Content-Type"), b, c.want)
		}
	}
	// Keys are the fields only when spelled exactly, as json.loads and a
	// dict lookup read them: ARGS is ignored, and args wins over Args.
	for body, want := range map[string]string{
		`{"ARGS":["smuggled"],"stdout":{"capture":true}}`:                     "\n",
		`{"args":["a"],"Args":["b"],"stdout":{"capture":true}}`:               "a\n",
		`{"args":["a"],"stdout":{"capture":true},"STDOUT":{"capture":false}}`: "a\n",
		`{"args":["a"],"stdout":{"capture":true,"CAPTURE":false}}`:            "a\n",
	} {
		code, _, b := httpexecPost(t, s.url, "/echo", "application/json", body)
		if out, _ := stream(t, decodeHTTPExec(t, code, b).Stdout); out != want {
			t.Errorf("%s: stdout %q, want %q", body, out, want)
		}
	}
	code, _, b = httpexecPost(t, s.url, "/echo", "", nil)
	if r := decodeHTTPExec(t, code, b); *r.Return != 0 {
		t.Fatalf("no body: %s", b)
	}
	// A body past http.max_body_bytes is Quart's 413 page (its
	// MAX_CONTENT_LENGTH); one at the limit is read.
	limit := int(s.watcher.Current().HTTP.MaxBodyBytes)
	for size, want := range map[int]int{limit + 1: 413, limit: 200} {
		body := `{"args":["x"],"stdout":{"capture":true},"pad":"` + strings.Repeat("p", size-len(`{"args":["x"],"stdout":{"capture":true},"pad":""}`)) + `"}`
		code, hdr, b := httpexecPost(t, s.url, "/echo", "application/json", body)
		if code != want || want == 413 && !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
			t.Errorf("a body of %d bytes (limit %d): %d %q %.200s, want %d", size, limit, code, hdr.Get("Content-Type"), b, want)
		}
	}
}

// TestHTTPExecBodyTruthiness: httpexec 1.0.3 read its body with Python
// truthiness and dict lookups (params = request.json or {}, each stream
// params.get(key, {}), capture by truth, encode looked up only for a
// captured stream, environ | (env or {}), a non-validating b64decode):
// what ran there runs here, and what raised there (its 500) is Quart's
// 400.
func TestHTTPExecBodyTruthiness(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), nil, "hx")
	for _, c := range []struct {
		path, body string
		want       int
		stdout     string // "" for not captured, "empty" for captured and empty
	}{
		{"/echo", `[]`, 200, ""},
		{"/echo", `0`, 200, ""},
		{"/echo", `""`, 200, ""},
		{"/echo", `false`, 200, ""},
		{"/echo", `null`, 200, ""},
		{"/echo", `{}`, 200, ""},
		{"/echo", `{"args":["a"],"stdout":{"capture":1}}`, 200, "a\n"},
		{"/echo", `{"args":["a"],"stdout":{"capture":"false"}}`, 200, "a\n"},
		{"/echo", `{"args":["a"],"stdout":{"capture":0,"encode":"hex"}}`, 200, ""},
		{"/echo", `{"args":["a"],"stdout":{"capture":false,"encode":"hex"}}`, 200, ""},
		{"/echo", `{"environment":[]}`, 200, ""},
		{"/echo", `{"environment":""}`, 200, ""},
		{"/echo", `{"stdin":{"content":null,"encode":"rot13"}}`, 200, ""},
		{"/cat", `{"stdin":{"content":"aGVs bG8=","encode":"base64"},"stdout":{"capture":true}}`, 200, "hello"},
		{"/cat", `{"stdin":{"content":"!!","encode":"base64"},"stdout":{"capture":true}}`, 200, "empty"},
		{"/echo", `[1]`, 400, ""},
		{"/echo", `"x"`, 400, ""},
		{"/echo", `{"stdin":null}`, 400, ""},
		{"/echo", `{"stdout":null}`, 400, ""},
		{"/echo", `{"stderr":[]}`, 400, ""},
		{"/echo", `{"stdout":{"capture":true,"encode":"hex"}}`, 400, ""},
		{"/echo", `{"stdin":{"content":5}}`, 400, ""},
		{"/echo", `{"environment":["A"]}`, 400, ""},
		{"/echo", `{"environment":{"A":1}}`, 400, ""},
	} {
		code, hdr, b := httpexecPost(t, s.url, c.path, "application/json", c.body)
		if code != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.path, c.body, code, b, c.want)
			continue
		}
		if code != 200 {
			if !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
				t.Errorf("%s %s: %q, want Quart's HTML 400", c.path, c.body, hdr.Get("Content-Type"))
			}
			continue
		}
		r := decodeHTTPExec(t, code, b)
		switch {
		case c.stdout == "" && string(r.Stdout) != "null":
			t.Errorf("%s %s: stdout %s, want null", c.path, c.body, r.Stdout)
		case c.stdout == "empty":
			if out, _ := stream(t, r.Stdout); out != "" {
				t.Errorf("%s %s: stdout %q, want empty", c.path, c.body, out)
			}
		case c.stdout != "":
			if out, _ := stream(t, r.Stdout); out != c.stdout {
				t.Errorf("%s %s: stdout %q, want %q", c.path, c.body, out, c.stdout)
			}
		}
	}
	// Quart's jsonify escaped every character past ASCII (ensure_ascii).
	code, _, b := httpexecPost(t, s.url, "/echo", "application/json", `{"args":["é😀"],"stdout":{"capture":true}}`)
	if code != 200 || !strings.Contains(string(b), `"stdout":{"content":"\u00e9\ud83d\ude00\n","encode":null}`) {
		t.Errorf("non-ASCII output: %d %s", code, b)
	}
}

// TestHTTPExecOutputCap pins what docs/compat.md says of output past
// worker.max_output_bytes: the first and last halves of the cap are kept
// with orderly's marker between them, inside the bytes, so encoded
// (binary) output is not byte-exact either.
func TestHTTPExecOutputCap(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), map[string]any{"worker.max_output_bytes": 64}, "hx")
	marker := func(n int) string { return fmt.Sprintf("\n…[orderly: %d bytes omitted]…\n", n) }

	line := strings.Repeat("abcdefghij", 10)
	r := httpexecRun(t, s.url, "/echo", map[string]any{"args": []string{line}, "stdout": map[string]any{"capture": true}})
	out, enc := stream(t, r.Stdout)
	if want := line[:32] + marker(37) + line[69:] + "\n"; out != want || enc != nil {
		t.Fatalf("capped text = %q %v, want %q", out, enc, want)
	}

	in := make([]byte, 200)
	for i := range in {
		in[i] = byte(255 - i)
	}
	r = httpexecRun(t, s.url, "/cat", map[string]any{
		"stdin":  map[string]any{"content": base64.StdEncoding.EncodeToString(in), "encode": "base64"},
		"stdout": map[string]any{"capture": true, "encode": "base64"}})
	out, enc = stream(t, r.Stdout)
	got, err := base64.StdEncoding.DecodeString(out)
	want := string(in[:32]) + marker(136) + string(in[168:])
	if err != nil || string(got) != want || enc == nil || *enc != "base64" {
		t.Fatalf("capped base64 = %q (%v, %v), want the bytes of %q", got, enc, err, want)
	}
}

// TestHTTPExecCancelsWhatItGaveUpOn: a request whose order is still
// queued when the wait (limits.max_timeout plus httpexecGrace) is over
// fails, and the order is canceled on record first: answered 500, it must
// not run later, when its host comes back, behind the client's back.
func TestHTTPExecCancelsWhatItGaveUpOn(t *testing.T) {
	defer func(g time.Duration) { httpexecGrace = g }(httpexecGrace)
	httpexecGrace = 500 * time.Millisecond
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), map[string]any{"limits.max_timeout": "1s", "limits.default_timeout": "1s"}) // no worker for hx
	code, _, body := httpexecPost(t, s.url, "/echo", "application/json", map[string]any{"args": []string{"late"}})
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "did not finish within 1.5s; canceled") {
		t.Fatalf("a request whose order stayed queued: %d %q", code, body)
	}
	_, b := s.do("GET", "/v1/orders?host=hx", nil)
	var list api.OrderList
	if err := json.Unmarshal(b, &list); err != nil || len(list.Orders) != 1 || list.Orders[0].Status != order.StatusCanceled {
		t.Fatalf("the order after the request gave up: %v %s", err, b)
	}
	s.startWorker("hx")
	time.Sleep(time.Second)
	if o := s.get(list.Orders[0].ID); o.Status != order.StatusCanceled || o.StartedAt != nil {
		t.Fatalf("with its host back, the order %s started at %v", o.Status, o.StartedAt)
	}
}

// TestHTTPExecPaths: any depth, collapsed leading slashes, traversal and
// encoded traversal, the root, directories, missing files and methods.
func TestHTTPExecPaths(t *testing.T) {
	h := newHTTPExecRoot(t)
	s := newSecStack(t, httpexecConfig(h, false), nil, "hx")
	for _, path := range []string{"/sub/echo", "//echo"} {
		code, _, b := httpexecPost(t, s.url, path, "application/json", map[string]any{})
		if r := decodeHTTPExec(t, code, b); *r.Return != 0 {
			t.Fatalf("%s: %s", path, b)
		}
	}
	notFound := []struct{ path, named string }{
		{"/missing", filepath.Join(h.root, "missing")},
		{"/adir", filepath.Join(h.root, "adir")},
		{"/../echo", filepath.Dir(h.root) + "/echo"},
		{"/%2e%2e/echo", filepath.Dir(h.root) + "/echo"},
	}
	for _, c := range notFound {
		code, hdr, b := httpexecPost(t, s.url, c.path, "application/json", map[string]any{})
		want := "Command `" + c.named + "` not found"
		if code != 404 || string(b) != want || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("%s: %d %q %q, want 404 %q", c.path, code, hdr.Get("Content-Type"), b, want)
		}
	}
	// The 404 quotes the path unescaped, as httpexec did; a browser
	// must not run what it holds on the API's origin, which the web UI
	// shares.
	code, hdr, b := httpexecPost(t, s.url, "/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "application/json", map[string]any{})
	if want := "Command `" + filepath.Join(h.root, "<script>alert(1)</script>") + "` not found"; code != 404 || string(b) != want {
		t.Errorf("a path holding markup: %d %q, want 404 %q", code, b, want)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "sandbox") ||
		hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("a 404 quoting a path holding markup came with Content-Security-Policy %q and X-Content-Type-Options %q, want default-src 'none' and sandbox, and nosniff",
			csp, hdr.Get("X-Content-Type-Options"))
	}
	if code, _, _ := httpexecPost(t, s.url, "/", "application/json", map[string]any{}); code != 404 {
		t.Errorf("POST / = %d, want 404", code)
	}
	// No route matches "/" in httpexec, so any method there is a 404.
	for _, m := range []string{"GET", "PUT", "OPTIONS"} {
		req, _ := http.NewRequestWithContext(t.Context(), m, s.url+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("%s / = %d, want 404", m, resp.StatusCode)
		}
	}
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		req, _ := http.NewRequestWithContext(t.Context(), m, s.url+"/echo", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "OPTIONS, POST" {
			t.Errorf("%s /echo = %d (Allow %q), want 405 (Allow OPTIONS, POST)", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	// Quart answers OPTIONS on the route itself, before the view looks
	// for the command: 200, no body, whether the command exists or not.
	for _, path := range []string{"/echo", "/missing"} {
		req, _ := http.NewRequestWithContext(t.Context(), "OPTIONS", s.url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Allow") != "OPTIONS, POST" || len(b) != 0 ||
			resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("OPTIONS %s = %d (Allow %q, %q) %q, want 200 (Allow OPTIONS, POST) and no body",
				path, resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"), b)
		}
	}
	// A file without an execute bit is found, and fails when run.
	if code, _, b := httpexecPost(t, s.url, "/noexec", "application/json", map[string]any{}); code != 500 {
		t.Errorf("noexec = %d %s, want 500", code, b)
	}
	// Native routes keep working beside the surface at /.
	if code, b := s.do("GET", "/v1/hosts", nil); code != 200 {
		t.Errorf("GET /v1/hosts = %d %s", code, b)
	}
	// An EXEC_ROOT that is gone fails every request with a 500.
	if err := os.Rename(h.root, h.root+".gone"); err != nil {
		t.Fatal(err)
	}
	if code, _, b := httpexecPost(t, s.url, "/echo", "application/json", map[string]any{}); code != 500 {
		t.Errorf("missing exec_root = %d %s, want 500", code, b)
	}
}

// TestHTTPExecLinks is the EXEC_ROOT/FOLLOW_LINKS matrix: a link whose
// target stays inside the root runs either way; a link leading outside
// runs only with follow_links, and otherwise is a 404 naming its target.
func TestHTTPExecLinks(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("follow_links=%t", follow), func(t *testing.T) {
			h := newHTTPExecRoot(t)
			s := newSecStack(t, httpexecConfig(h, follow), nil, "hx")
			code, _, b := httpexecPost(t, s.url, "/inlink", "application/json", map[string]any{"args": []string{"in"}, "stdout": map[string]any{"capture": true}})
			if out, _ := stream(t, decodeHTTPExec(t, code, b).Stdout); out != "in\n" {
				t.Fatalf("inlink: %s", b)
			}
			code, _, b = httpexecPost(t, s.url, "/outlink", "application/json", map[string]any{"args": []string{"out"}, "stdout": map[string]any{"capture": true}})
			if follow {
				if out, _ := stream(t, decodeHTTPExec(t, code, b).Stdout); out != "out\n" {
					t.Fatalf("outlink with follow_links: %s", b)
				}
				// httpexec joined without resolving, so ".." left the
				// root; orderly resolves it and refuses.
				code, _, b = httpexecPost(t, s.url, "/%2e%2e/outside/tool", "application/json", map[string]any{})
				if want := "Command `" + filepath.Join(h.outside, "tool") + "` not found"; code != 404 || string(b) != want {
					t.Fatalf("../outside/tool with follow_links = %d %q, want 404 %q", code, b, want)
				}
				return
			}
			want := "Command `" + filepath.Join(h.outside, "tool") + "` not found"
			if code != 404 || string(b) != want {
				t.Fatalf("outlink without follow_links = %d %q, want 404 %q", code, b, want)
			}
		})
	}
}

// TestHTTPExecNeedsACL: the unauthenticated surface is refused at startup
// without an acl.allow, or with one that admits everyone.
func TestHTTPExecNeedsACL(t *testing.T) {
	h := newHTTPExecRoot(t)
	for _, acl := range []string{"", `acl: {allow: ["0.0.0.0/0"]}`} {
		text := strings.Replace(httpexecConfig(h, false), "acl:\n  allow: [\"127.0.0.1/32\", \"::1/128\"]\n", acl+"\n", 1)
		path := filepath.Join(t.TempDir(), "orderly.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.NewWatcher(path, nil, nil, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "compat.httpexec.enabled") {
			t.Fatalf("acl %q: err = %v, want a refusal naming compat.httpexec.enabled", acl, err)
		}
	}
	text := strings.Replace(httpexecConfig(h, false), "    principal: httpexec-client\n", "", 1)
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.NewWatcher(path, nil, nil, testLogger(t)); err == nil || !strings.Contains(err.Error(), "compat.httpexec.principal") {
		t.Fatalf("no principal: err = %v", err)
	}
}
