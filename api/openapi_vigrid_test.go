package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/policy"
)

// TestSpecVigridResponses drives the Vigrid compat surface, mounted as
// serve mounts it, through each route's answers (success, the integrity
// check, the ACL, a wrong method, the rate limit and the refusals of
// execute and kill), and validates each request and response against
// openapi.yaml. Executes are orders on a real worker.
func TestSpecVigridResponses(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.Vigrid.Enabled, cfg.Compat.Vigrid.Prefix, cfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	cfg.Compat.Vigrid.MaxWait = 20 * time.Second
	var acl atomic.Pointer[netacl.ACL]
	var ratePerIP atomic.Int64
	var drift atomic.Bool
	rule := config.Rule{Name: "vigrid", Roles: []string{"ops", "admin"}, Hosts: []string{"h1"}, Allow: []string{`^(echo|sleep)( |$)`}}
	srv := e.runbookAPI(rule, func() api.Settings {
		return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerIP: int(ratePerIP.Load())}
	}, func() config.Runbooks { return cfg.Runbooks })
	authn := authenticator(t, e.tokens, "")
	h := &compat.Vigrid{Deps: compat.Deps{Orders: srv, Config: func() config.Config { return cfg }, ACL: acl.Load,
		Auth:      func() compat.Authenticator { return authn },
		Authorize: ruleAuthorizer(t, rule, cfg),
		Drift:     drift.Load,
		Reload:    func(context.Context, string) error { drift.Store(false); return nil }},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: h})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	vx := *e
	vx.url = hs.URL
	sc := newSurfaceChecker(t, &vx, "vigrid")

	do := func(want int, c call) {
		t.Helper()
		if resp, b := sc.do(c); resp.StatusCode != want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, want, b)
		}
	}
	for _, v := range []struct {
		want int
		c    call
	}{
		{http.StatusOK, call{method: "GET", path: "/api/v1/health"}},
		{http.StatusOK, call{as: "alice", method: "GET", path: "/api/v1/status"}},
		{http.StatusOK, call{as: "alice", method: "POST", path: "/api/v1/execute", body: map[string]any{"command": "echo", "arguments": []string{"hi"}, "synchronous": true}}},
		{http.StatusAccepted, call{as: "alice", method: "POST", path: "/api/v1/execute", body: map[string]any{"command": "sleep", "arguments": []string{"1"}}}},
		{http.StatusOK, call{as: "alice", method: "GET", path: "/api/v1/queue"}},
		{http.StatusOK, call{as: "alice", method: "POST", path: "/api/v1/kill", body: map[string]any{"signal": "sigterm"}}},
		{http.StatusOK, call{as: "admin", method: "POST", path: "/api/v1/reload"}},
		{http.StatusBadRequest, call{as: "alice", method: "POST", path: "/api/v1/kill", body: map[string]any{"signal": "SIGWINCH"}}},
		{http.StatusBadRequest, call{as: "alice", method: "POST", path: "/api/v1/kill", body: `{"signal":`, invalid: true}},
		{http.StatusBadRequest, call{as: "alice", method: "POST", path: "/api/v1/execute", body: map[string]any{"arguments": []string{"x"}}, invalid: true}},
		{http.StatusForbidden, call{as: "alice", method: "POST", path: "/api/v1/execute", body: map[string]any{"command": "rm"}}},
		{http.StatusForbidden, call{as: "alice", method: "POST", path: "/api/v1/reload"}},
		{http.StatusUnauthorized, call{method: "GET", path: "/api/v1/queue"}},
		{http.StatusUnauthorized, call{method: "GET", path: "/api/v1/queue", hdr: []string{"Authorization", "Bearer nope"}}},
	} {
		do(v.want, v.c)
	}
	// The 401s are on record, as the native API's are.
	if n := rejections(t, e, "vigrid", "unauthenticated"); n != 2 {
		t.Errorf("%d refused tokens recorded, want 2", n)
	}
	// A method the route does not take, on every route.
	for _, c := range []call{
		{method: "POST", path: "/api/v1/health", specMethod: "GET"},
		{as: "alice", method: "POST", path: "/api/v1/status", specMethod: "GET"},
		{as: "alice", method: "GET", path: "/api/v1/execute", specMethod: "POST"},
		{as: "alice", method: "POST", path: "/api/v1/queue", specMethod: "GET"},
		{as: "alice", method: "GET", path: "/api/v1/kill", specMethod: "POST"},
		{as: "alice", method: "GET", path: "/api/v1/reload", specMethod: "POST"},
	} {
		c.invalid = true
		do(http.StatusMethodNotAllowed, c)
	}

	routes := []call{
		{method: "GET", path: "/api/v1/health"},
		{as: "alice", method: "GET", path: "/api/v1/status"},
		{as: "alice", method: "POST", path: "/api/v1/execute", body: map[string]any{"command": "echo"}},
		{as: "alice", method: "GET", path: "/api/v1/queue"},
		{as: "alice", method: "POST", path: "/api/v1/kill"},
		{as: "admin", method: "POST", path: "/api/v1/reload"},
	}
	// The integrity check: every route but health and reload.
	drift.Store(true)
	for _, c := range routes[1:5] {
		do(http.StatusServiceUnavailable, c)
	}
	drift.Store(false)
	deny, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	acl.Store(deny)
	forbidden := rejections(t, e, "vigrid", "forbidden")
	for _, c := range routes {
		do(http.StatusForbidden, c)
	}
	acl.Store(nil)
	// So are the ACL's refusals, health's included.
	if n := rejections(t, e, "vigrid", "forbidden") - forbidden; n != len(routes) {
		t.Errorf("%d ACL refusals recorded, want %d", n, len(routes))
	}
	ratePerIP.Store(1)
	do(http.StatusOK, routes[0]) // the one request of the minute
	for _, c := range routes {
		do(http.StatusTooManyRequests, c)
	}
	// PostgreSQL gone: every route that reads or writes orders answers
	// Vigrid's 500 "Internal server error".
	ratePerIP.Store(0)
	e.pool.Close()
	for _, c := range routes[1:5] {
		do(http.StatusInternalServerError, c)
	}
}

// ruleAuthorizer is compat.Deps.Authorize deciding by rule alone, as
// serve's policy with that one rule and cfg's default timeout would.
func ruleAuthorizer(t *testing.T, rule config.Rule, cfg config.Config) func(p auth.Principal, host, command string, args []string, runAs string, dryRun bool) (order.Decision, error) {
	t.Helper()
	pol, err := policy.New([]config.Rule{rule})
	if err != nil {
		t.Fatal(err)
	}
	return func(p auth.Principal, host, command string, args []string, runAs string, dryRun bool) (order.Decision, error) {
		return pol.Decide(policy.Request{Principal: p, Host: host, Command: command, Args: args, RunAs: runAs,
			Timeout: cfg.Limits.DefaultTimeout, TimeoutDefaulted: true, DryRun: dryRun})
	}
}
