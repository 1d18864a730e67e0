package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestCompatWaitsEndWhenTheCredentialGoes: a compat surface's
// synchronous execute whose credential stops admitting it while it waits
// (httpexec: acl.allow no longer holds the client; Vigrid: its token
// removed; stage0: its JWT's secret changed) ends within the recheck, in
// the surface's own shape and naming the order, without the output; the
// order, accepted, runs on to its end. Before, each waited for the order
// and answered its output to the revoked caller.
func TestCompatWaitsEndWhenTheCredentialGoes(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	e := hx.apiEnv
	ctx := testenv.Context(t)
	const secret = "the-secret-output"

	// Vigrid, its tokens read at each request as serve's are.
	vcfg := config.Default()
	vcfg.HTTP.MaxBodyBytes = 1 << 20
	vcfg.Compat.Vigrid.Enabled, vcfg.Compat.Vigrid.Prefix, vcfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	vcfg.Compat.Vigrid.MaxWait = 30 * time.Second
	rule := config.Rule{Name: "vigrid", Roles: []string{"ops"}, Hosts: []string{"h1"}, Allow: []string{`^sleep( |$)`}}
	vsrv := e.runbookAPI(rule, func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return vcfg.Runbooks })
	vsrv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: compat.Deps{Orders: vsrv,
		Config: func() config.Config { return vcfg }, ACL: func() *netacl.ACL { return nil },
		Auth:      func() compat.Authenticator { return e.authn.Load() },
		Authorize: ruleAuthorizer(t, rule, vcfg)},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}})
	vs := httptest.NewServer(vsrv.Handler())
	t.Cleanup(vs.Close)

	// stage0, its configuration reloadable.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Slow.md"), []byte(stage0Runbook("Slow", "{}", "", "sleep 6; echo "+secret)), 0o644); err != nil {
		t.Fatal(err)
	}
	var s0cfg atomic.Pointer[config.Config]
	c := config.Default()
	c.Runbooks.Dir, c.Runbooks.Timeout = dir, time.Minute
	c.HTTP.MaxBodyBytes = 1 << 20
	c.Compat.Stage0.Enabled, c.Compat.Stage0.EnableLogin = true, true
	c.Compat.Stage0.JWTSecret = "stage0-revoked-test-secret-0123456789abcdef"
	c.Compat.Stage0.Hosts = []string{"h1"}
	s0cfg.Store(&c)
	current := func() config.Config { return *s0cfg.Load() }
	s0srv := e.runbookAPI(config.Rule{Name: "stage0", Roles: []string{"developer"}, Hosts: []string{"*"}, Allow: []string{"^runbook:"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return current().Runbooks })
	s0h := &compat.Stage0{Deps: compat.Deps{Orders: s0srv, Config: current, ACL: func() *netacl.ACL { return nil }}, Runbooks: s0srv,
		Getenv: func(string) (string, bool) { return "", false }, Shutdown: func() {}}
	s0srv.MountCompat(api.CompatSurface{Prefix: "/api", Handler: s0h}, api.CompatSurface{Prefix: "/dev-login", Handler: s0h})
	s0 := httptest.NewServer(s0srv.Handler())
	t.Cleanup(s0.Close)
	resp, err := http.Post(s0.URL+"/dev-login", "application/json", strings.NewReader(`{"subject":"dev","roles":["developer"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || login.AccessToken == "" {
		t.Fatalf("dev-login: %v", err)
	}

	send := func(req *http.Request, revoke func()) (int, http.Header, string) {
		t.Helper()
		revoked := time.AfterFunc(time.Second, revoke)
		defer revoked.Stop()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, string(b)
	}
	orderIn := func(what, text string) uuid.UUID {
		t.Helper()
		i := strings.Index(text, "order ")
		if i < 0 {
			i = strings.Index(text, "run ")
			if i >= 0 {
				i += len("run ") - len("order ")
			}
		}
		if i < 0 || len(text) < i+len("order ")+36 {
			t.Fatalf("%s: no order named in %q", what, text)
		}
		id, err := uuid.Parse(text[i+len("order ") : i+len("order ")+36])
		if err != nil {
			t.Fatalf("%s: %v in %q", what, err, text)
		}
		return id
	}
	var ids []uuid.UUID

	// httpexec: the client's address leaves acl.allow.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hx.url+"/dash",
		strings.NewReader(`{"args":["-c","sleep 6; echo `+secret+`"],"stdout":{"capture":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	elsewhere, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	code, hdr, body := send(req, func() { hx.acl.Store(elsewhere) })
	hx.acl.Store(nil)
	if code != http.StatusForbidden || hdr.Get("Content-Type") != "text/plain; charset=utf-8" ||
		!strings.HasPrefix(body, "client address no longer allowed: order ") || !strings.HasSuffix(body, " was accepted and goes on; read it through the API\n") ||
		strings.Contains(body, secret) {
		t.Errorf("httpexec whose client left acl.allow mid-wait: %d %q %q, want 403 text/plain naming the order", code, hdr.Get("Content-Type"), body)
	} else {
		ids = append(ids, orderIn("httpexec", body))
	}

	// Vigrid: the token is removed by a reload.
	e.authn.Store(authenticator(t, e.tokens, ""))
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, vs.URL+"/api/v1/execute",
		strings.NewReader(`{"command":"sleep","arguments":["6"],"synchronous":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["bob"])
	code, hdr, body = send(req, func() { e.revoke("bob") })
	var v struct {
		Status, Message string
		OrderID         uuid.UUID `json:"order_id"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || code != http.StatusUnauthorized || hdr.Get("Content-Type") != "application/json" ||
		v.Status != "error" || v.Message != "Invalid authentication token" || v.OrderID == uuid.Nil {
		t.Errorf("Vigrid sync execute whose token was revoked mid-wait: %d %q %q (%v), want 401 Invalid authentication token with the order", code, hdr.Get("Content-Type"), body, err)
	} else {
		ids = append(ids, v.OrderID)
	}
	e.authn.Store(authenticator(t, e.tokens, ""))

	// stage0: the JWT secret changes by a reload.
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, s0.URL+"/api/runbooks/Slow.md/execute", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	code, hdr, body = send(req, func() {
		n := *s0cfg.Load()
		n.Compat.Stage0.JWTSecret = "stage0-revoked-test-another-secret-0123456789"
		s0cfg.Store(&n)
	})
	done := `event: done` + "\n" + `data: {"success": false, "runbook": "Slow.md", "return_code": 1, "stdout": "", "stderr": "Invalid token: Signature verification failed: run `
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/event-stream") ||
		!strings.Contains(body, "event: stderr\ndata: Invalid token: Signature verification failed: run ") || !strings.Contains(body, done) ||
		strings.Contains(body, secret) {
		t.Errorf("stage0 execute whose JWT's secret changed mid-run: %d %q\n%s\nwant a stderr event and done naming the run, without its output", code, hdr.Get("Content-Type"), body)
	} else {
		ids = append(ids, orderIn("stage0", body[strings.Index(body, "event: stderr"):]))
	}

	// Each order was accepted and runs on to its end.
	for _, id := range ids {
		testenv.WaitUntil(t, time.Minute, "order "+id.String()+" succeeded", func() bool {
			o, err := e.store.GetOrder(ctx, id)
			return err == nil && o.Status == order.StatusSucceeded
		})
	}
}
