package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestVigridRefusedCommandsAreLogged: a command Vigrid's execute refuses
// at its own checks (forbidden characters, the policy, the resolution,
// the timeout) never reaches intake, which logs "order rejected" for the
// commands it refuses (docs/observability.md). The surface logs it the
// same way, with its host, principal, source, code and reason, so an
// operator watching the log for refusals (Vigrid's test-api.sh grepped
// its log for them) sees those of Vigrid's clients as well as the
// native API's. Each is in `rejections` too, as before.
func TestVigridRefusedCommandsAreLogged(t *testing.T) {
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, logger: slog.New(slog.NewJSONHandler(logs, nil))})
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Worker.ForbiddenChars = ";"
	cfg.Compat.Vigrid.Enabled, cfg.Compat.Vigrid.Prefix, cfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	cfg.Compat.Vigrid.MaxWait = 20 * time.Second
	rule := config.Rule{Name: "vigrid", Roles: []string{"ops", "admin"}, Hosts: []string{"h1"},
		Allow: []string{`^(echo|rm|no-such-command-hg18)( |$)`}, Deny: []string{`^rm`}}
	srv := e.runbookAPI(rule, func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg.Runbooks })
	authn := authenticator(t, e.tokens, "")
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: compat.Deps{Orders: srv,
		Config: func() config.Config { return cfg }, ACL: func() *netacl.ACL { return nil }, Auth: func() compat.Authenticator { return authn },
		Authorize: ruleAuthorizer(t, rule, cfg)},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	for _, c := range []struct {
		body   string
		status int
		code   string
		reason string
	}{
		{`{"command":"echo","arguments":["a;b"],"synchronous":true}`, 400, "invalid_request", `forbidden character ';' in an argument`},
		{`{"command":"rm","arguments":["-rf","/tmp/x"],"synchronous":true}`, 403, "forbidden", `command denied by rule "vigrid"`},
		{`{"command":"cat","arguments":["/etc/passwd"],"synchronous":true}`, 403, "forbidden", `no policy rule allows command "cat"`},
		{`{"command":"no-such-command-hg18","synchronous":true}`, 404, "not_found", `command "no-such-command-hg18" not found`},
		{`{"command":"echo","arguments":["x"],"synchronous":true,"timeout":"abc"}`, 400, "invalid_request", "timeout is not a number"},
	} {
		req, err := http.NewRequestWithContext(testenv.Context(t), "POST", hs.URL+"/api/v1/execute", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("%s: %d, want %d", c.body, resp.StatusCode, c.status)
		}
		var found bool
		for _, l := range logLines(t, logs, "order rejected") {
			reason, _ := l["reason"].(string)
			if l["source"] == "vigrid" && l["code"] == c.code && strings.Contains(reason, c.reason) {
				found = true
				if l["host"] != "h1" || l["principal"] != "alice" || l["level"] != "INFO" {
					t.Errorf("%s: order rejected line %v", c.body, l)
				}
			}
		}
		if !found {
			t.Errorf("%s: no \"order rejected\" line with code %s and reason %q:\n%s", c.body, c.code, c.reason, logs.String())
		}
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = 'vigrid' AND code = $1 AND reason LIKE '%' || $2 || '%'`,
			c.code, c.reason).Scan(&n); err != nil || n != 1 {
			t.Errorf("%s: %d rejections rows (%v), want 1", c.body, n, err)
		}
	}
}
