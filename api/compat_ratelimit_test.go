package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestCompatSurfacesSpendThePrincipalsAllowance: limits.rate_per_principal
// holds on the compat surfaces as on REST, from one allowance: a
// principal over it on the native routes is refused on Vigrid's too, and
// the other way round, and httpexec's requests spend its principal's. The
// surfaces applied only the per-IP limit, so one credential spread over
// addresses got past its limit through them (compat.md said stage0's
// surface applied both).
func TestCompatSurfacesSpendThePrincipalsAllowance(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.Vigrid.Enabled, cfg.Compat.Vigrid.Prefix, cfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	cfg.Compat.Vigrid.MaxWait = 20 * time.Second
	rule := config.Rule{Name: "vigrid", Roles: []string{"ops", "admin"}, Hosts: []string{"h1"}, Allow: []string{`^echo( |$)`}}
	srv := e.runbookAPI(rule, func() api.Settings {
		return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerPrincipal: 3}
	}, func() config.Runbooks { return cfg.Runbooks })
	authn := authenticator(t, e.tokens, "")
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: compat.Deps{Orders: srv,
		Config: func() config.Config { return cfg }, ACL: func() *netacl.ACL { return nil }, Auth: func() compat.Authenticator { return authn },
		Authorize: ruleAuthorizer(t, rule, cfg)},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	var last string // the body of the last answer
	send := func(who, method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens[who])
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = string(b)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	execute := `{"command":"echo","arguments":["x"],"synchronous":false}`
	// alice: two native requests and one Vigrid execute spend her three.
	for i, c := range []struct{ method, path, body string }{
		{"GET", "/v1/orders", ""}, {"GET", "/v1/hosts", ""}, {"POST", "/api/v1/execute", execute},
	} {
		if code, _ := send("alice", c.method, c.path, c.body); code == http.StatusTooManyRequests {
			t.Fatalf("alice's request %d (%s %s) refused within her allowance", i+1, c.method, c.path)
		}
	}
	if code, retry := send("alice", "POST", "/api/v1/execute", execute); code != http.StatusTooManyRequests || retry == "" {
		t.Fatalf("alice's Vigrid execute past her allowance: %d (Retry-After %q), want 429", code, retry)
	}
	// In Vigrid's format (TestCompatRateLimitsInTheSurfacesFormat).
	if last != `{"message":"rate limit exceeded: at most 3 requests per minute per principal","status":"error"}`+"\n" {
		t.Errorf("the 429's body: %s", last)
	}
	if code, _ := send("alice", "GET", "/api/v1/queue", ""); code != http.StatusTooManyRequests {
		t.Fatalf("alice's Vigrid queue past her allowance: %d, want 429", code)
	}
	// bob: Vigrid first, then the native routes are out for him too.
	for range 3 {
		if code, _ := send("bob", "GET", "/api/v1/status", ""); code == http.StatusTooManyRequests {
			t.Fatal("bob refused within his allowance")
		}
	}
	if code, _ := send("bob", "GET", "/v1/orders", ""); code != http.StatusTooManyRequests {
		t.Fatalf("bob's native request after spending his allowance on Vigrid: %d, want 429", code)
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = 'vigrid' AND code = 'rate_limited' AND principal = 'alice'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("audited Vigrid refusals of alice for her rate: %d, %v", n, err)
	}

	// httpexec: its requests spend its principal's allowance.
	hx := newHTTPExecSurface(t, envOptions{})
	hx.ratePerPrincipal.Store(2)
	post := func() int {
		resp, err := http.Post(hx.url+"/echo", "application/json", strings.NewReader(`{"args":["x"]}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 2 {
		if code := post(); code != http.StatusOK {
			t.Fatalf("httpexec within its principal's allowance: %d", code)
		}
	}
	if code := post(); code != http.StatusTooManyRequests {
		t.Fatalf("httpexec past its principal's allowance: %d, want 429", code)
	}
}

// TestHTTPExecRefusesCrossOriginBrowsers: httpexec requests carry no
// credential, and a POST that is not JSON runs its command with no
// arguments, so any web page that someone inside acl.allow opened could
// run a command in exec_root with a plain form or a no-cors fetch (a
// "simple" request, which a browser sends cross-origin without asking).
// A browser's cross-origin or cross-site request (Sec-Fetch-Site, or an
// Origin that is not the request's host) is refused 403 and nothing is
// recorded; scripts, which send neither header, run as before.
func TestHTTPExecRefusesCrossOriginBrowsers(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	post := func(hdr ...string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, hx.url+"/echo", strings.NewReader("ignored"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, hdr := range [][]string{
		{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "https://evil.example"}, // an older browser: no Sec-Fetch-Site
		{"Origin", "null"},                 // a sandboxed frame or a data: page
	} {
		if code := post(hdr...); code != http.StatusForbidden {
			t.Errorf("a browser's cross-origin POST %v: %d, want 403", hdr, code)
		}
	}
	if got := sourceStatuses(t, hx.apiEnv, "httpexec"); len(got) != 0 {
		t.Fatalf("cross-origin requests made orders: %v", got)
	}
	var n int
	if err := hx.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = 'httpexec' AND status = 403`).Scan(&n); err != nil || n != 4 {
		t.Errorf("audited cross-origin refusals: %d, %v", n, err)
	}
	// A script (no Origin, no Sec-Fetch-Site) and a page of the same origin run.
	if code := post(); code != http.StatusOK {
		t.Errorf("a script's POST: %d, want 200", code)
	}
	if code := post("Sec-Fetch-Site", "same-origin"); code != http.StatusOK {
		t.Errorf("a same-origin POST: %d, want 200", code)
	}
}

// TestDevLoginOnlyFromThisMachine: stage0's /dev-login mints a token with
// any roles for whoever asks, so orderly serves it only on a loopback
// listener. A reverse proxy on the same machine (TLS in front, as
// security.md advises) made it everyone's: the proxy connects from
// loopback. A request that came through a proxy (it says so with
// Forwarded, X-Forwarded-For or X-Real-IP), or that a browser sent from
// another origin, is refused; a local client's request is served.
func TestDevLoginOnlyFromThisMachine(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	stage0URL := serveStage0(t, e, t.TempDir())
	login := func(hdr ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, stage0URL+"/dev-login",
			strings.NewReader(`{"subject":"mallory","roles":["admin"]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for _, hdr := range [][]string{
		{"X-Forwarded-For", "203.0.113.9"},
		{"X-Real-IP", "203.0.113.9"},
		{"Forwarded", "for=203.0.113.9;proto=https"},
		{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"},
	} {
		if code, b := login(hdr...); code != http.StatusForbidden || strings.Contains(b, "access_token") {
			t.Errorf("dev-login with %v: %d %s, want 403 and no token", hdr, code, b)
		}
	}
	if code, b := login(); code != http.StatusOK || !strings.Contains(b, "access_token") {
		t.Fatalf("dev-login from this machine: %d %s", code, b)
	}
}

// TestCompatRateLimitsInTheSurfacesFormat: a surface answers its rate
// limits (limits.rate_per_ip before anything else, rate_per_principal once
// the request is authenticated) in its original's error format, as every
// other refusal: a Vigrid client reads {"status": "error", "message": …},
// a stage0 client {"error": …}, an httpexec client plain text. They were
// 429s in orderly's {"error": {"code": …}} envelope, where a Vigrid
// client found no message and a stage0 client an object in "error".
func TestCompatRateLimitsInTheSurfacesFormat(t *testing.T) {
	type answer struct {
		code        int
		ctype, body string
		retry       string
	}
	do := func(req *http.Request) answer {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return answer{resp.StatusCode, resp.Header.Get("Content-Type"), string(b), resp.Header.Get("Retry-After")}
	}
	request := func(method, url, auth, body string) *http.Request {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		return req
	}
	want := func(what string, got answer, ctype, body string) {
		t.Helper()
		if got.code != http.StatusTooManyRequests || got.ctype != ctype || got.body != body || got.retry == "" {
			t.Errorf("%s: %d %q %q (Retry-After %q), want 429 %q %q with a Retry-After", what, got.code, got.ctype, got.body, got.retry, ctype, body)
		}
	}
	var perIP, perPrincipal, streams atomic.Int64
	settings := func() api.Settings {
		return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerIP: int(perIP.Load()), RatePerPrincipal: int(perPrincipal.Load()),
			MaxStreams: int(streams.Load())}
	}

	// Vigrid and stage0 on one API, whose host h1 has no worker.
	e, hs := limitedCompat(t, settings, `^echo( |$)`, "^runbook:")
	login := do(request("POST", hs.URL+"/dev-login", "", `{"subject":"dev","roles":["developer"]}`))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(login.body), &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("dev-login: %d %s", login.code, login.body)
	}

	perPrincipal.Store(1)
	do(request("GET", hs.URL+"/api/v1/status", e.tokens["alice"], "")) // alice's one request of the minute
	want("Vigrid past the principal's allowance", do(request("GET", hs.URL+"/api/v1/status", e.tokens["alice"], "")),
		"application/json", `{"message":"rate limit exceeded: at most 1 requests per minute per principal","status":"error"}`+"\n")
	do(request("GET", hs.URL+"/api/runbooks", tok.AccessToken, ""))
	want("stage0 past the principal's allowance", do(request("GET", hs.URL+"/api/runbooks", tok.AccessToken, "")),
		"application/json", `{"error":"rate limit exceeded: at most 1 requests per minute per principal"}`+"\n")
	perPrincipal.Store(0)

	perIP.Store(1)
	do(request("GET", hs.URL+"/api/v1/health", "", "")) // this address's one request of the minute
	want("Vigrid past the address's allowance", do(request("GET", hs.URL+"/api/v1/health", "", "")),
		"application/json", `{"message":"rate limit exceeded: at most 1 requests per minute per client address","status":"error"}`+"\n")
	want("stage0 past the address's allowance", do(request("GET", hs.URL+"/api/runbooks", tok.AccessToken, "")),
		"application/json", `{"error":"rate limit exceeded: at most 1 requests per minute per client address"}`+"\n")
	want("dev-login past the address's allowance", do(request("POST", hs.URL+"/dev-login", "", `{}`)),
		"application/json", `{"error":"rate limit exceeded: at most 1 requests per minute per client address"}`+"\n")
	// On record under the surface that refused them.
	for source, want := range map[string]int{"vigrid": 1, "stage0": 2} {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = $1 AND code = 'rate_limited' AND principal = ''`, source).Scan(&n); err != nil || n != want {
			t.Errorf("%s's refusals for the address's rate on record: %d, %v; want %d", source, n, err, want)
		}
	}
	// The native routes keep orderly's envelope.
	if got := do(request("GET", hs.URL+"/v1/orders", e.tokens["alice"], "")); got.code != http.StatusTooManyRequests || !strings.Contains(got.body, `"code":"rate_limited"`) {
		t.Errorf("a native request past the address's allowance: %d %s", got.code, got.body)
	}
	perIP.Store(0)

	// A sync execute past limits.max_streams_per_principal says when to
	// come back, as every 429 does.
	streams.Store(1)
	queued := do(request("POST", hs.URL+"/api/v1/execute", e.tokens["alice"], `{"command":"echo","arguments":["x"]}`))
	var q struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	if err := json.Unmarshal([]byte(queued.body), &q); err != nil || queued.code != http.StatusAccepted {
		t.Fatalf("Vigrid async execute: %d %s", queued.code, queued.body)
	}
	served := *e
	served.url = hs.URL
	defer openStream(t, &served, "alice", q.OrderID)() // alice's one stream, open while the order waits (no worker)
	got := do(request("POST", hs.URL+"/api/v1/execute", e.tokens["alice"], `{"command":"echo","arguments":["x"],"synchronous":true}`))
	if got.code != http.StatusTooManyRequests || got.retry != "1" || !strings.HasSuffix(got.body, `","status":"error"}`+"\n") {
		t.Errorf("Vigrid sync execute past the principal's streams: %d %s (Retry-After %q), want 429 in Vigrid's format with Retry-After 1", got.code, got.body, got.retry)
	}

	// httpexec: plain text, as its other refusals httpexec never had.
	hx := newHTTPExecSurface(t, envOptions{})
	hx.ratePerPrincipal.Store(1)
	if got := do(request("POST", hx.url+"/echo", "", `{"args":["x"]}`)); got.code != http.StatusOK {
		t.Fatalf("httpexec within its principal's allowance: %d %s", got.code, got.body)
	}
	want("httpexec past its principal's allowance", do(request("POST", hx.url+"/echo", "", `{"args":["x"]}`)),
		"text/plain; charset=utf-8", "rate limit exceeded: at most 1 requests per minute per principal\n")
	hx.ratePerPrincipal.Store(0)
	hx.ratePerIP.Store(1)
	do(request("OPTIONS", hx.url+"/echo", "", ""))
	want("httpexec past the address's allowance", do(request("POST", hx.url+"/echo", "", `{"args":["x"]}`)),
		"text/plain; charset=utf-8", "rate limit exceeded: at most 1 requests per minute per client address\n")
	hx.ratePerIP.Store(0)

	// Each httpexec request waits for its order, holding one of its
	// principal's streams: past limits.max_streams_per_principal, 429
	// with Retry-After.
	hx.maxStreams.Store(1)
	slow := make(chan answer, 1)
	go func() { slow <- do(request("POST", hx.url+"/dash", "", `{"args":["-c","sleep 3"]}`)) }()
	testenv.WaitUntil(t, 20*time.Second, "the slow request's order running", func() bool {
		st := sourceStatuses(t, hx.apiEnv, "httpexec")
		return len(st) > 0 && st[len(st)-1] == "running"
	})
	got = do(request("POST", hx.url+"/echo", "", `{"args":["x"]}`))
	if got.code != http.StatusTooManyRequests || got.retry != "1" || got.ctype != "text/plain; charset=utf-8" {
		t.Errorf("httpexec past its principal's streams: %d %q %q (Retry-After %q), want 429 text/plain with Retry-After 1", got.code, got.ctype, got.body, got.retry)
	}
	if a := <-slow; a.code != http.StatusOK {
		t.Errorf("the slow request: %d %s", a.code, a.body)
	}
}

// TestCompatPanicAnswersTheOriginals500: a surface handler that panics (a
// bug of ours) answers the original's own 500, as its client knows it
// (Vigrid's "Internal server error", stage0's "A processing error
// occurred", Quart's page), not chi's empty 500.
func TestCompatPanicAnswersTheOriginals500(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	srv := e.runbookAPI(config.Rule{Name: "none", Roles: []string{"ops"}, Hosts: []string{"h1"}, Allow: []string{"^$"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return config.Runbooks{} })
	broken := compat.Deps{Orders: srv, Config: func() config.Config { panic("a bug") }, ACL: func() *netacl.ACL { return nil }}
	s0 := &compat.Stage0{Deps: broken, Runbooks: srv}
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: broken}},
		api.CompatSurface{Prefix: "/api", Handler: s0},
		api.CompatSurface{Prefix: "/", Fallback: true, Handler: &compat.HTTPExec{Deps: broken}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	for _, c := range []struct{ method, path, ctype, body string }{
		{"GET", "/api/v1/status", "application/json", `{"message":"Internal server error","status":"error"}` + "\n"},
		{"GET", "/api/runbooks", "application/json", `{"error":"A processing error occurred"}` + "\n"},
		{"POST", "/echo", "text/html; charset=utf-8", "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n" +
			"<p>The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.</p>\n"},
	} {
		req, err := http.NewRequestWithContext(testenv.Context(t), c.method, hs.URL+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Content-Type") != c.ctype || string(b) != c.body {
			t.Errorf("%s %s after a panic: %d %q %q, want 500 %q %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), b, c.ctype, c.body)
		}
	}
}

// TestStage0RateLimitHeaders: stage0's Flask-Limiter sent X-RateLimit-Limit,
// -Remaining and -Reset on its answers while rate limiting was on (its
// README), 429s included, and a client that paces itself reads them;
// the surface sent none. They now describe the limit nearest to refusing
// (per address or per principal) on every stage0 answer past a limit
// that is on, /dev-login's too; Vigrid (which had no limits) and the
// native routes send none, and with both limits off neither does stage0.
func TestStage0RateLimitHeaders(t *testing.T) {
	var perIP, perPrincipal atomic.Int64
	settings := func() api.Settings {
		return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerIP: int(perIP.Load()), RatePerPrincipal: int(perPrincipal.Load())}
	}
	e, hs := limitedCompat(t, settings, "^runbook:")

	type answer struct {
		code                    int
		limit, remaining, reset string
		body                    string
	}
	do := func(method, path, auth, body string) answer {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return answer{resp.StatusCode, resp.Header.Get("X-RateLimit-Limit"), resp.Header.Get("X-RateLimit-Remaining"),
			resp.Header.Get("X-RateLimit-Reset"), string(b)}
	}
	want := func(what string, got answer, code int, limit, remaining string) {
		t.Helper()
		reset, err := strconv.ParseInt(got.reset, 10, 64)
		if got.code != code || got.limit != limit || got.remaining != remaining || err != nil ||
			reset < time.Now().Unix() || reset > time.Now().Add(2*time.Minute).Unix() {
			t.Errorf("%s: %d X-RateLimit-Limit %q -Remaining %q -Reset %q, want %d %q %q and a Unix time within the next minute: %s",
				what, got.code, got.limit, got.remaining, got.reset, code, limit, remaining, got.body)
		}
	}
	none := func(what string, got answer) {
		t.Helper()
		if got.limit != "" || got.remaining != "" || got.reset != "" {
			t.Errorf("%s: X-RateLimit-Limit %q -Remaining %q -Reset %q, want none", what, got.limit, got.remaining, got.reset)
		}
	}

	login := do("POST", "/dev-login", "", `{"subject":"dev","roles":["developer"]}`)
	none("dev-login with the limits off", login)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(login.body), &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("dev-login: %d %s", login.code, login.body)
	}
	none("stage0 with the limits off", do("GET", "/api/runbooks", tok.AccessToken, ""))

	// Both limits on: the one with fewer requests left is shown.
	perIP.Store(100)
	perPrincipal.Store(3)
	// Spelled as Flask-Limiter spelled them (Go's client reads any case).
	conn, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /api/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", tok.AccessToken)
	raw, _ := io.ReadAll(conn)
	conn.Close()
	for _, h := range []string{"\r\nX-RateLimit-Limit: 3\r\n", "\r\nX-RateLimit-Remaining: 2\r\n", "\r\nX-RateLimit-Reset: "} {
		if !strings.Contains(string(raw), h) {
			t.Errorf("the answer has no %q: %q", strings.TrimSpace(h), raw)
		}
	}
	want("stage0, the principal's second of 3", do("GET", "/api/config", tok.AccessToken, ""), 200, "3", "1")
	want("a refusal after the limits (404)", do("GET", "/api/runbooks/Nope.md", tok.AccessToken, ""), 404, "3", "0")
	want("stage0 past the principal's allowance", do("GET", "/api/config", tok.AccessToken, ""), 429, "3", "0")
	none("a native route", do("GET", "/v1/orders", e.tokens["alice"], ""))
	perPrincipal.Store(0)

	perIP.Store(3)
	want("dev-login, the address's first of 3", do("POST", "/dev-login", "", `{}`), 200, "3", "2")
	want("stage0, the address's second of 3", do("GET", "/api/runbooks", tok.AccessToken, ""), 200, "3", "1")
	none("Vigrid, which had no limits", do("GET", "/api/v1/health", "", ""))
	want("stage0 past the address's allowance", do("GET", "/api/runbooks", tok.AccessToken, ""), 429, "3", "0")
}

// limitedCompat serves Vigrid (host h1, which has no worker), stage0 and
// its /dev-login, each with the rate-limit headers serve gives stage0, on
// one API whose limits settings gives; allow is the one rule's commands.
func limitedCompat(t *testing.T, settings func() api.Settings, allow ...string) (*apiEnv, *httptest.Server) {
	t.Helper()
	e := newAPIEnv(t, envOptions{})
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Runbooks.Dir = t.TempDir()
	cfg.Compat.Vigrid.Enabled, cfg.Compat.Vigrid.Prefix, cfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	cfg.Compat.Stage0.Enabled, cfg.Compat.Stage0.EnableLogin = true, true
	cfg.Compat.Stage0.JWTSecret = "stage0-ratelimit-test-secret-0123456789abcdef"
	cfg.Compat.Stage0.Hosts = []string{"h1"}
	current := func() config.Config { return cfg }
	rule := config.Rule{Name: "all", Roles: []string{"ops", "admin", "developer"}, Hosts: []string{"h1"}, Allow: allow}
	srv := e.runbookAPI(rule, settings, func() config.Runbooks { return cfg.Runbooks })
	authn := authenticator(t, e.tokens, "")
	noACL := func() *netacl.ACL { return nil }
	s0 := &compat.Stage0{Deps: compat.Deps{Orders: srv, Config: current, ACL: noACL}, Runbooks: srv,
		Getenv: func(string) (string, bool) { return "", false }, Shutdown: func() {}}
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: compat.Deps{Orders: srv,
		Config: current, ACL: noACL, Auth: func() compat.Authenticator { return authn }, Authorize: ruleAuthorizer(t, rule, cfg)},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}},
		api.CompatSurface{Prefix: "/api", Handler: s0, RateHeaders: true}, api.CompatSurface{Prefix: "/dev-login", Handler: s0, RateHeaders: true})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return e, hs
}
