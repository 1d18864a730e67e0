package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
)

// routeProbeValues stand in for a route's path parameters: names no
// record has and that a careless or hostile client sends (invalid UTF-8,
// an overlong '.', NUL, an encoded slash, a bidi override, a long name,
// a dot-dot, a wildcard).
var routeProbeValues = []string{"%ff", "%C0%AE%C0%AE", "a%00b", "a%2Fb", "%E2%80%AE", strings.Repeat("a", 5000), "..", "%2A"}

// routeProbeBodies are malformed bodies, each sent as JSON and as a form.
var routeProbeBodies = []string{"{", "null", "[]", `{"a":1e400}`, "{\"host\":\"h\xff\"}", `{"host":"web-1","host":"x"}`,
	`{"Host":"web-1","host":"x"}`, "{\"host\":\"a\\u0000b\"}", strings.Repeat("[", 5000), "x=%ff&x=1&csrf=%00"}

// TestEveryRouteAnswersHostileInputBelow500 walks every route the
// router serves (chi.Walk, so a route added later is probed too) and
// sends each, with each method, as nobody, as an admin, as an ops
// principal and with a web UI session: path parameters no record has
// (routeProbeValues), malformed bodies as JSON, as a form and as text,
// and a query that does not parse or repeats itself. No answer is a
// 5xx (a recovered panic is chi's 500), and every /v1 refusal is the
// error envelope with a code. /ui/static/%ff was http.FileServer's 500.
func TestEveryRouteAnswersHostileInputBelow500(t *testing.T) {
	e := newUIEnv(t)
	mux, ok := e.handler.(chi.Routes)
	if !ok {
		t.Fatalf("the handler is a %T, not the router", e.handler)
	}
	sess, csrf := e.uiSession(t, "alice")
	type route struct{ method, pattern string }
	var routes []route
	if err := chi.Walk(mux, func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, route{method, pattern})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(routes) < 40 {
		t.Fatalf("walked %d routes: the walk does not reach the router's", len(routes))
	}
	param := regexp.MustCompile(`\{[^}]+\}|\*$`)
	send := func(method, path, contentType, body, who string) *httptest.ResponseRecorder {
		// A live stream of an order that exists would stream until the
		// order ends; the probe's ids exist nowhere, and a second is
		// more than any refusal takes.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		switch who {
		case "boss", "alice":
			req.Header.Set("Authorization", "Bearer "+e.tokens[who])
		case "session":
			req.AddCookie(sess)
			req.Header.Set("X-CSRF-Token", csrf)
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		return rec
	}
	check := func(method, path, contentType, body, who string) {
		t.Helper()
		rec := send(method, path, contentType, body, who)
		if path == "/v1/admin/reload" && rec.Code == http.StatusServiceUnavailable && strings.Contains(rec.Body.String(), "cannot reload") {
			return // uiEnv's server has no configuration to load again
		}
		if rec.Code >= 500 {
			t.Errorf("%s %.120s as %s (%s %.40q): %d %.200s", method, path, who, contentType, body, rec.Code, rec.Body)
			return
		}
		if rec.Code >= 400 && strings.HasPrefix(path, "/v1/") && method != http.MethodHead {
			var env struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error.Code == "" {
				t.Errorf("%s %.120s as %s: %d without the error envelope: %.200s", method, path, who, rec.Code, rec.Body)
			}
		}
	}
	tried := 0
	for _, r := range routes {
		for _, v := range routeProbeValues {
			path := param.ReplaceAllString(r.pattern, v)
			for _, method := range []string{r.method, http.MethodHead, http.MethodOptions, http.MethodPut, "FOO"} {
				for _, who := range []string{"nobody", "boss", "alice", "session"} {
					check(method, path, "", "", who)
					tried++
				}
			}
			for _, q := range []string{"?%zz", "?limit=1e400&limit=x&wait=-1", "?host=%ff&cursor=%00"} {
				check(r.method, path+q, "", "", "alice")
				tried++
			}
			if r.method == http.MethodGet || r.method == http.MethodHead {
				continue
			}
			for _, body := range routeProbeBodies {
				for _, ct := range []string{"application/json", "application/x-www-form-urlencoded", "text/plain"} {
					for _, who := range []string{"boss", "alice", "session"} {
						check(r.method, path, ct, body, who)
						tried++
					}
				}
			}
		}
	}
	t.Logf("%d routes, %d requests", len(routes), tried)
}
