package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly-run/orderly/internal/auth"
)

// The authorization matrix: every route serve mounts (walked from the
// router, so a route added without a row here fails
// TestAuthorizationMatrix) against every kind of caller security.md
// names: nobody, a malformed credential, a credential the server does
// not know (a revoked token), and the principals of uiEnv by role —
// boss (admin), audra (auditor), alice (ops, who owns the orders the
// rows name), carol (a role no rule or action names: another
// principal), dave (greeter, one action's role) — and JWTs: jwt-alice
// (HS256, sub alice, role ops), which is principal jwt:alice, not alice;
// one past its expiry and one with alg none, both refused.
var matrixCallers = []string{"nobody", "malformed", "unknown", "expired-jwt", "none-jwt",
	"boss", "audra", "alice", "carol", "dave", "jwt-alice"}

// cells are a row's statuses by caller. The callers without a valid
// credential answer alike (refused); jwt-alice answers as alice where
// jwt is 0 (what roles decide), and jwt where the order is alice's own.
type cells struct {
	refused                         int
	boss, audra, alice, carol, dave int
	jwt                             int
}

func (c cells) of(caller string) int {
	switch caller {
	case "jwt-alice":
		if c.jwt != 0 {
			return c.jwt
		}
		return c.alice
	case "boss":
		return c.boss
	case "audra":
		return c.audra
	case "alice":
		return c.alice
	case "carol":
		return c.carol
	case "dave":
		return c.dave
	}
	return c.refused
}

// all is the same status for every caller: a route that asks nobody who
// they are.
func all(status int) cells { return cells{status, status, status, status, status, status, status} }

// matrixJWT signs claims for uiEnv's HS256 key, or unsigned with alg
// none.
func matrixJWT(t *testing.T, claims jwt.MapClaims, none bool) string {
	t.Helper()
	var (
		s   string
		err error
	)
	if none {
		s, err = jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	} else {
		s, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(uiJWTSecret))
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// matrixRow is one route's rule. path fills the route's parameters,
// fresh once per caller (an order to cancel is each caller's own try);
// a row of a live stream is sent as HEAD, which answers with the
// stream's status and headers at once.
type matrixRow struct {
	method, route string
	path          func() string
	body          string
	want          cells
}

// TestAuthorizationMatrix sends every route, as every caller, through a
// real serve's handler (PostgreSQL, NATS, a worker for web-1), and holds
// each answer's status to what docs/security.md says: /v1 and the
// runbook routes refuse a missing, malformed or unknown credential with
// 401; orders, batches and their streams are their submitter's (404 to
// anyone else but admin and auditor); cancel is the submitter's or an
// admin's; forgetting a host and reloading the config are admin's;
// actions are their roles' (404 to anyone else, as an unknown action);
// the policy decides what runs (403). The web UI's pages send a
// browser without a session to sign in (303) and refuse a POST without
// one (401), a POST without the session's anti-forgery token (403), and
// show a signed-in person what the API lets their credential read.
func TestAuthorizationMatrix(t *testing.T) {
	e := newUIEnv(t)
	h := e.handler
	unknown, _ := auth.NewToken() // a token the server does not (or no longer) know
	now := time.Now()
	claims := func(exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "roles": []string{"ops"}, "iat": exp.Add(-time.Hour).Unix(), "exp": exp.Unix()}
	}
	credential := map[string]string{"malformed": "Bearer not a token", "unknown": "Bearer " + unknown,
		"expired-jwt": "Bearer " + matrixJWT(t, claims(now.Add(-time.Hour)), false),
		"none-jwt":    "Bearer " + matrixJWT(t, claims(now.Add(time.Hour)), true),
		"jwt-alice":   "Bearer " + matrixJWT(t, claims(now.Add(time.Hour)), false)}
	for _, who := range []string{"boss", "audra", "alice", "carol", "dave"} {
		credential[who] = "Bearer " + e.tokens[who]
	}
	send := func(method, path, auth, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// alice's orders, which nobody else but boss and audra may read: one
	// to a host no worker serves, queued for good, and a fan-out's.
	aliceOrder := func() string {
		rec := send("POST", "/v1/orders", credential["alice"], `{"host":"nowhere-1","command":"true"}`)
		var o struct{ ID string }
		if err := json.Unmarshal(rec.Body.Bytes(), &o); rec.Code != http.StatusAccepted || err != nil {
			t.Fatalf("alice's order: %d %s", rec.Code, rec.Body)
		}
		return o.ID
	}
	orderID := aliceOrder()
	rec := send("POST", "/v1/orders", credential["alice"], `{"hosts":["nowhere-2"],"command":"true"}`)
	var fan struct {
		BatchID string `json:"batch_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &fan); rec.Code != http.StatusAccepted || err != nil || fan.BatchID == "" {
		t.Fatalf("alice's fan-out: %d %s", rec.Code, rec.Body)
	}
	fixed := func(p string) func() string { return func() string { return p } }
	ord := func(suffix string) func() string { return fixed("/v1/orders/" + orderID + suffix) }
	owned := cells{refused: 401, boss: 200, audra: 200, alice: 200, carol: 404, dave: 404, jwt: 404}
	signedIn := all(200)
	signedIn.refused = 401
	rows := []matrixRow{
		{"GET", "/healthz", fixed("/healthz"), "", all(200)},
		{"GET", "/readyz", fixed("/readyz"), "", all(200)},
		{"GET", "/metrics", fixed("/metrics"), "", signedIn}, // http.metrics_public off
		{"GET", "/openapi.yaml", fixed("/openapi.yaml"), "", all(200)},
		{"GET", "/docs", fixed("/docs"), "", all(301)},
		{"GET", "/docs/", fixed("/docs/"), "", all(200)},
		{"GET", "/docs/{file}", fixed("/docs/index.css"), "", all(200)},

		{"POST", "/v1/orders", fixed("/v1/orders"), `{"host":"nowhere-3","command":"true"}`,
			cells{refused: 401, boss: 403, audra: 403, alice: 202, carol: 403, dave: 403}},
		{"GET", "/v1/orders", fixed("/v1/orders"), "", signedIn},
		{"GET", "/v1/orders/{id}", ord(""), "", owned},
		{"GET", "/v1/orders/{id}/events", ord("/events"), "", owned},
		{"GET", "/v1/batches/{id}", fixed("/v1/batches/" + fan.BatchID), "", owned},
		{"POST", "/v1/orders/{id}/cancel", func() string { return "/v1/orders/" + aliceOrder() + "/cancel" }, "",
			cells{refused: 401, boss: 200, audra: 403, alice: 200, carol: 404, dave: 404, jwt: 404}},
		{"GET", "/v1/hosts", fixed("/v1/hosts"), "", signedIn},
		{"GET", "/v1/hosts/{host}", fixed("/v1/hosts/web-1"), "", signedIn},
		{"DELETE", "/v1/hosts/{host}", fixed("/v1/hosts/gone-4"), "",
			cells{refused: 401, boss: 404, audra: 403, alice: 403, carol: 403, dave: 403}},
		{"POST", "/v1/hosts/{host}/maintenance", fixed("/v1/hosts/maint-9/maintenance"), `{"reason":"x"}`,
			cells{refused: 401, boss: 200, audra: 403, alice: 403, carol: 403, dave: 403}},
		{"DELETE", "/v1/hosts/{host}/maintenance", fixed("/v1/hosts/maint-9/maintenance"), "",
			cells{refused: 401, boss: 200, audra: 403, alice: 403, carol: 403, dave: 403}},
		{"GET", "/v1/status", fixed("/v1/status"), "", signedIn},
		{"GET", "/v1/actions", fixed("/v1/actions"), "", signedIn},
		{"GET", "/v1/actions/{name}", fixed("/v1/actions/greet"), "",
			cells{refused: 401, boss: 404, audra: 404, alice: 200, carol: 404, dave: 200}},
		{"GET", "/v1/actions/{name}/choices", fixed("/v1/actions/restart/choices?host=web-1"), "",
			cells{refused: 401, boss: 404, audra: 404, alice: 200, carol: 404, dave: 404}},
		{"POST", "/v1/actions/{name}/run", fixed("/v1/actions/tag/run"), `{"host":"web-1","params":{"n":"1234"}}`,
			cells{refused: 401, boss: 404, audra: 404, alice: 202, carol: 404, dave: 404}},
		{"POST", "/v1/admin/reload", fixed("/v1/admin/reload"), "",
			cells{refused: 401, boss: 503, audra: 403, alice: 403, carol: 403, dave: 403}},

		// Runbooks are read by every principal; validate judges the file
		// and the caller's Required Claims (Hello has none), not the
		// policy, which refuses at execute (runbooks.md).
		{"GET", "/v1/runbooks", fixed("/v1/runbooks"), "", signedIn},
		{"GET", "/v1/runbooks/{name}", fixed("/v1/runbooks/Hello.md"), "", signedIn},
		{"GET", "/v1/runbooks/{name}/required-env", fixed("/v1/runbooks/Hello.md/required-env"), "", signedIn},
		{"GET", "/v1/runbooks/{name}/history", fixed("/v1/runbooks/Hello.md/history"), "", signedIn},
		{"POST", "/v1/runbooks/{name}/validate", fixed("/v1/runbooks/Hello.md/validate"), `{"env_vars":{"NAME":"x"}}`, signedIn},
		{"PATCH", "/v1/runbooks/{name}/validate", fixed("/v1/runbooks/Hello.md/validate"), `{"env_vars":{"NAME":"x"}}`, signedIn},
		{"POST", "/v1/runbooks/{name}/execute", fixed("/v1/runbooks/Hello.md/execute"), `{"env_vars":{"NAME":"x"}}`,
			cells{refused: 401, boss: 403, audra: 403, alice: 202, carol: 403, dave: 403}},
	}
	routes := map[string]bool{}
	mux, ok := h.(chi.Routes)
	if !ok {
		t.Fatalf("the handler is a %T, not the router", h)
	}
	if err := chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes[method+" "+route] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ruled := map[string]bool{}
	for _, row := range rows {
		key := row.method + " " + row.route
		ruled[key] = true
		if !routes[key] {
			t.Errorf("%s: a row for a route the router does not serve", key)
			continue
		}
		for _, caller := range matrixCallers {
			method := row.method
			if strings.HasSuffix(row.route, "/events") {
				method = http.MethodHead
			}
			rec := send(method, row.path(), credential[caller], row.body)
			if want := row.want.of(caller); rec.Code != want {
				t.Errorf("%s as %s: %d, want %d: %.300s", key, caller, rec.Code, want, bytes.TrimSpace(rec.Body.Bytes()))
			}
			// A refusal names no one else's data: not the order, its
			// command, host or principal.
			if rec.Code >= 400 && caller != "alice" && leaks(rec.Body.String(), orderID, fan.BatchID) {
				t.Errorf("%s as %s: the refusal shows alice's order: %s", key, caller, rec.Body)
			}
		}
	}
	uiRouted := uiMatrix(t, e, orderID)
	for key := range routes {
		if !ruled[key] && !uiRouted[key] {
			t.Errorf("%s has no row in the authorization matrix (authz_matrix_test.go): say who may call it", key)
		}
	}
	// No cross-origin reads: the API sends no CORS headers, so a page of
	// another site cannot read an answer even with a credential its
	// browser holds (the API takes none from cookies anyway).
	for _, method := range []string{"OPTIONS", "GET"} {
		req := httptest.NewRequest(method, "/v1/orders", nil)
		req.Header.Set("Origin", "https://elsewhere.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Authorization", credential["alice"])
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		for name := range rec.Header() {
			if strings.HasPrefix(name, "Access-Control-") {
				t.Errorf("%s /v1/orders from another origin: %s: %s", method, name, rec.Header().Get(name))
			}
		}
	}
	// Lists hold only what the caller may read.
	for _, c := range []struct {
		who, path string
		sees      bool
	}{
		{"carol", "/v1/orders", false}, {"carol", "/v1/orders?principal=alice", false},
		{"jwt-alice", "/v1/orders", false}, {"jwt-alice", "/v1/orders?principal=alice", false},
		{"carol", "/v1/hosts/nowhere-1", false}, {"dave", "/v1/orders?batch=" + fan.BatchID, false},
		{"audra", "/v1/orders?principal=alice", true}, {"boss", "/v1/orders", true},
	} {
		rec := send("GET", c.path, credential[c.who], "")
		if got := strings.Contains(rec.Body.String(), orderID) || strings.Contains(rec.Body.String(), fan.BatchID); got != c.sees {
			t.Errorf("GET %s as %s: %d, shows alice's orders %v, want %v: %.300s", c.path, c.who, rec.Code, got, c.sees, rec.Body)
		}
	}
}

// uiMatrix checks the web UI's routes: without a session a page sends
// the browser to sign in and a POST is refused 401; a signed-in POST
// without the session's anti-forgery token is refused 403; a signed-in
// person reads alice's order as the API lets them. It returns the
// routes it covered.
func uiMatrix(t *testing.T, e *uiEnv, orderID string) map[string]bool {
	t.Helper()
	sessions := map[string]*http.Cookie{}
	for _, who := range []string{"boss", "audra", "alice", "carol"} {
		sessions[who], _ = e.uiSession(t, who)
	}
	forged := &http.Cookie{Name: "orderly_session", Value: "not-a-session"}
	type uiRow struct {
		method, route, path string
		// page is the status of a signed-in GET by boss, audra, alice and
		// carol; zero for a POST, checked for its refusals only.
		page [4]int
	}
	o := "/ui/orders/" + orderID
	rows := []uiRow{
		{"GET", "/ui/", "/ui/", [4]int{200, 200, 200, 200}},
		{"GET", "/ui/orders/{id}", o, [4]int{200, 200, 200, 404}},
		{"GET", "/ui/orders/{id}/events", o + "/events", [4]int{200, 200, 200, 404}},
		// A queued order has no output yet: 409 to who may read it.
		{"GET", "/ui/orders/{id}/output/{stream}", o + "/output/stdout", [4]int{409, 409, 409, 404}},
		{"GET", "/ui/history", "/ui/history", [4]int{200, 200, 200, 200}},
		{"GET", "/ui/hosts", "/ui/hosts", [4]int{200, 200, 200, 200}},
		{"GET", "/ui/runbooks/{name}", "/ui/runbooks/Hello.md", [4]int{200, 200, 200, 200}},
		{"GET", "/ui/actions/{name}/choices", "/ui/actions/restart/choices?host=web-1", [4]int{404, 404, 200, 404}},
		{"POST", "/ui/signout", "/ui/signout", [4]int{}},
		{"POST", "/ui/exec", "/ui/exec", [4]int{}},
		{"POST", "/ui/orders/{id}/cancel", o + "/cancel", [4]int{}},
		{"POST", "/ui/runbooks/{name}/run", "/ui/runbooks/Hello.md/run", [4]int{}},
		{"POST", "/ui/actions/{name}/run", "/ui/actions/tag/run", [4]int{}},
	}
	// Open to everyone: the sign-in form (its POST checks its own nonce:
	// TestUISignInCookies) and the pages' scripts and styles, a file
	// server mounted for every method.
	covered := map[string]bool{"GET /ui/signin": true, "POST /ui/signin": true}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY"} {
		covered[m+" /ui/static/*"] = true
	}
	do := func(method, path string, c *http.Cookie, form url.Values) *httptest.ResponseRecorder {
		var body string
		if form != nil {
			body = form.Encode()
		}
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if strings.HasSuffix(path, "/events") && method == "GET" {
			req.Method = http.MethodHead
		}
		if c != nil {
			req.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		return rec
	}
	for _, r := range []struct{ path string }{{"/ui/signin"}, {"/ui/static/ui.js"}} {
		if rec := do("GET", r.path, nil, nil); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a session: %d, want 200", r.path, rec.Code)
		}
	}
	for _, row := range rows {
		key := row.method + " " + row.route
		covered[key] = true
		for _, c := range []*http.Cookie{nil, forged} {
			rec := do(row.method, row.path, c, url.Values{"x": {"1"}})
			want := http.StatusUnauthorized
			if row.method == "GET" {
				want = http.StatusSeeOther
			}
			if rec.Code != want || (want == http.StatusSeeOther && !strings.HasPrefix(rec.Header().Get("Location"), "/ui/signin")) {
				t.Errorf("%s with session %v: %d %s, want %d", key, c, rec.Code, rec.Header().Get("Location"), want)
			}
		}
		if row.method == "POST" {
			// Signed in, without the anti-forgery token, and with another
			// session's: a form from another site.
			_, carolCSRF := e.uiSession(t, "carol")
			for _, form := range []url.Values{{"x": {"1"}}, {"csrf": {carolCSRF}}} {
				if rec := do("POST", row.path, sessions["alice"], form); rec.Code != http.StatusForbidden {
					t.Errorf("%s signed in, anti-forgery token %q: %d, want 403", key, form.Get("csrf"), rec.Code)
				}
			}
			continue
		}
		for i, who := range []string{"boss", "audra", "alice", "carol"} {
			rec := do("GET", row.path, sessions[who], nil)
			if rec.Code != row.page[i] {
				t.Errorf("%s as %s: %d, want %d", key, who, rec.Code, row.page[i])
			}
			if rec.Code >= 400 && who == "carol" && leaks(rec.Body.String(), orderID) {
				t.Errorf("%s as carol: the refusal shows alice's order: %s", key, rec.Body)
			}
		}
	}
	return covered
}

// leaks reports whether a refusal's body names alice's order: its id,
// its batch, or the hosts only her orders name.
func leaks(body string, ids ...string) bool {
	for _, id := range ids {
		if strings.Contains(body, id) {
			return true
		}
	}
	return strings.Contains(body, "nowhere-1") || strings.Contains(body, "nowhere-2")
}
