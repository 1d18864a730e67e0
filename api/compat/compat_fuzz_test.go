package compat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/runbook"
)

// FuzzHTTPExecRequest gives httpexec's request parsing a command path,
// a Content-Type and a body: the lookup in exec_root (links not
// followed), the body's reading into an order, then the intake's
// order.Validate. A command found is a regular file inside exec_root,
// never the file a link points to outside it; a body refused is one of
// the statuses httpexec answers (400, 413, 422), and an order built from
// one is accepted or refused with a 4xx.
func FuzzHTTPExecRequest(f *testing.F) {
	root := f.TempDir()
	for _, d := range []string{"exec/bin", "outside"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for _, p := range []string{"exec/bin/tool", "exec/top", "outside/evil"} {
		if err := os.WriteFile(filepath.Join(root, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for link, target := range map[string]string{"exec/bin/out": "../../outside/evil", "exec/bin/in": "tool", "exec/up": ".."} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			f.Fatal(err)
		}
	}
	execRoot := filepath.Join(root, "exec")
	evil := filepath.Join(root, "outside/evil")
	for _, c := range []struct{ rel, ct, body string }{
		{"bin/tool", "application/json", `{"args":["-a","b"],"stdin":{"content":"aGk=","encode":"base64"},"stdout":{"capture":true,"encode":"base85"}}`},
		{"top", "application/vnd.x+json; charset=utf-8", `{"environment":{"A":"1"},"stderr":{"capture":1}}`},
		{"bin/out", "application/json", `[]`},
		{"bin/in", "text/plain", `not read`},
		{"up/outside/evil", "application/json", `0`},
		{"../outside/evil", "application/json", `{"args":"x"}`},
		{"bin/../../outside/evil", "application/json", `{"args":[1]}`},
		{"bin", "application/json", `{"stdin":{"content":"x","encode":"rot13"}}`},
		{"bin/tool", "application/json", `{"stdin":{"content":"====","encode":"base64"}}`},
		{"bin/tool", "application/json", `{"args":["a\u0000b"],"environment":{"A=B":"1","":"x","B":"\u001b"}}`},
		{"bin/tool", "application/json", `{"args":[NaN, Infinity]}`},
		{"bin/tool", "application/json", ` `},
		{"bin/tool", "application/json", `{"stdin":{"content":"` + strings.Repeat("A", 100) + `","encode":"base85"}}`},
	} {
		f.Add(c.rel, c.ct, []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, rel, contentType string, body []byte) {
		path, found, err := resolveHTTPExec(execRoot, false, rel)
		if err != nil {
			t.Fatalf("resolve %q: %v", rel, err)
		}
		if found {
			real, err := filepath.EvalSymlinks(path)
			if err != nil || real == evil || !strings.HasPrefix(real, execRoot+"/") {
				t.Fatalf("%q found as %s (%s, %v), outside exec_root", rel, path, real, err)
			}
			if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("%q found as %s, not a regular file", rel, path)
			}
		}
		r := httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		o, status := (*HTTPExec)(nil).order(r, filepath.Join(execRoot, "bin/tool"), 1<<16)
		switch status {
		case 0:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			return
		default:
			t.Fatalf("body %q answered %d", body, status)
		}
		o.Host = "h"
		if err := order.Validate(o, order.DefaultLimits()); err != nil {
			if st := apiStatus(err); st < 400 || st > 499 {
				t.Fatalf("body %q: its order refused with %d: %v", body, st, err)
			}
		}
	})
}

// FuzzVigridExecute gives a Vigrid /execute body to what execute reads
// from it before anything is authorized: the JSON as Flask read it, the
// command and arguments as Python's str() of them, the timeout. A body
// read has a command without surrounding space, arguments free of the
// forbidden characters once forbiddenIn let them through, and a timeout
// that is never negative; its order is accepted or refused with a 4xx.
func FuzzVigridExecute(f *testing.F) {
	for _, b := range []string{
		`{"command":"ls","arguments":["-la","/tmp"],"synchronous":true,"timeout":30}`,
		`{"command":" uptime\u001f ","arguments":[1,2.50,true,null,{"a":[1]},"x"],"timeout":1e400}`,
		`{"command":["ls"],"timeout":"30"}`,
		`{"command":"ls","arguments":"-la"}`,
		`{"command":"ls","timeout":-1e400}`,
		`{"command":"ls","timeout":NaN}`,
		`{"command":"ls","timeout":-Infinity}`,
		`{"command":"ls","timeout":1e-30}`,
		`{"command":"ls","arguments":["a;b","$(x)","\u2028"]}`,
		`{"command":null}`, `null`, `[]`, `{"command":"ls","command":"rm"}`, `{"command":1e5}`,
	} {
		f.Add([]byte(b))
	}
	const forbidden = ";|&$`"
	f.Fuzz(func(t *testing.T, raw []byte) {
		var body *vigridExecute
		if err := pyUnmarshal(raw, &body); err != nil || body == nil {
			return
		}
		command := pyStrip(pyStr(body.Command))
		if len(body.Command) == 0 || string(body.Command) == "null" || command == "" {
			return
		}
		if pyStrip(command) != command {
			t.Fatalf("command %q keeps surrounding space", command)
		}
		args := []string{}
		if len(body.Arguments) > 0 {
			var list []json.RawMessage
			if err := json.Unmarshal(body.Arguments, &list); err != nil || list == nil {
				return
			}
			for _, a := range list {
				args = append(args, pyStr(a))
			}
		}
		if _, bad := forbiddenIn(args, forbidden); bad {
			return
		}
		for _, a := range args {
			if strings.ContainsAny(a, forbidden) {
				t.Fatalf("argument %q let through", a)
			}
		}
		o := &order.Order{Kind: order.KindExec, Host: "h", Command: command, Args: args, CaptureStdout: true, CaptureStderr: true}
		secs, ok := vigridSeconds(body.Timeout)
		if ok && secs > 0 {
			o.Timeout = vigridTimeout(secs)
			if o.Timeout < time.Millisecond {
				t.Fatalf("timeout %s (%v s) from %s", o.Timeout, secs, body.Timeout)
			}
		}
		if err := order.Validate(o, order.DefaultLimits()); err != nil {
			var oe *order.Error
			if !errors.As(err, &oe) {
				t.Fatalf("body %q: its order refused with %T %v", raw, err, err)
			}
			if st := apiStatus(err); st < 400 || st > 499 {
				t.Fatalf("body %q: its order refused with %d: %v", raw, st, err)
			}
		}
	})
}

// FuzzStage0Request gives stage0's surface a token whose header and
// claims the fuzzer writes, signed with the configured secret (so PyJWT's
// claim checks, pyjwtClaims and stage0Lifetime, are what is fuzzed), and
// an execute body. A token is taken (status 0) or refused 401, never
// anything else; a principal taken has a valid name and valid roles; a
// body is read, or refused 400 or 413, and its variables sanitized.
func FuzzStage0Request(f *testing.F) {
	const secret = "stage0-fuzz-secret"
	_, cfg, s := stage0AtFixedTime(secret)
	hs := `{"alg":"HS256","typ":"JWT"}`
	for _, c := range []struct{ header, claims, body string }{
		{hs, `{"sub":"ci","iss":"dev-idp","aud":"dev-api","exp":1800003600,"roles":["ops"]}`, `{"env_vars":{"A":"1","B":2,"C":null,"D":true}}`},
		{hs, `{"sub":"ci","iss":"dev-idp","aud":["x","dev-api"],"exp":"1800003600","iat":" 1_799_999_000 ","roles":"ops admin"}`, `{"env_vars":[]}`},
		{hs, `{"sub":"c\u0000i","iss":"dev-idp","aud":"dev-api","exp":1e400}`, `{"env_vars":{"1A":"x"}}`},
		{hs, `{"sub":"ci","iss":"dev-idp","aud":"dev-api","exp":NaN,"nbf":-Infinity}`, `[]`},
		{hs, `{"sub":"ci","iss":"dev-idp","aud":"dev-api","exp":1800003600,"iat":9223372036854775808}`, `{"env_vars":{"A":{"b":1}}}`},
		{hs, `{"sub":"ci","iss":"dev-idp","aud":"dev-api","exp":1800003600,"roles":[1,["x"],{"a":"b"}]}`, `{"env_vars":0}`},
		{`{"alg":"none"}`, `{"sub":"ci"}`, `null`},
		{`{"alg":"HS256","crit":["b64"],"b64":false}`, `{"sub":"ci","exp":1800003600}`, `{"env_vars":{"A":"\u0085x\u001b"}}`},
		{hs, `[]`, `{`},
		{hs, `{"sub":"ci","iss":"dev-idp","aud":"dev-api","exp":"٣٠"}`, ` `},
	} {
		f.Add(c.header, c.claims, []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, header, claims string, body []byte) {
		enc := base64.RawURLEncoding.EncodeToString
		in := enc([]byte(header)) + "." + enc([]byte(claims))
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(in))
		r := httptest.NewRequest(http.MethodPost, "/api/runbooks/x/execute", bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+in+"."+enc(m.Sum(nil)))
		q, status, msg := s.authenticate(r, cfg)
		switch {
		case status == http.StatusUnauthorized && q == nil && msg != "":
		case status == 0 && q != nil:
			if !auth.ValidName(q.userID) || q.p.Name != cfg.Compat.Stage0.PrincipalPrefix+q.userID {
				t.Fatalf("claims %q taken as user %q, principal %q", claims, q.userID, q.p.Name)
			}
			for _, role := range q.p.Roles {
				if !auth.ValidName(role) {
					t.Fatalf("claims %q taken with role %q", claims, role)
				}
			}
		default:
			t.Fatalf("claims %q answered %d %q", claims, status, msg)
		}
		b, status, err := readBody(r, 1<<16)
		switch status {
		case 0:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			if err == nil {
				t.Fatalf("body %q refused %d without a reason", body, status)
			}
			return
		default:
			t.Fatalf("body %q answered %d", body, status)
		}
		env, err := runbook.Sanitize(b.EnvVars)
		if err != nil {
			env = wellNamed(b.EnvVars)
		}
		for k, v := range env {
			if !runbook.ValidEnvName(k) || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' }) {
				t.Fatalf("body %q gives the run %q=%q", body, k, v)
			}
		}
	})
}
