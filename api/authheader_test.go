package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestTwoAuthorizationHeadersAreRefused: a request or a NATS submission
// with two Authorization headers is refused, whichever credentials they
// carry, on the plain routes and on the runbook routes that also take a
// script's delegated token. The first one was used before: a proxy that
// appends its own credential after the client's (or before it) decided
// who the request acted for without anyone seeing both.
func TestTwoAuthorizationHeadersAreRefused(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	cfg := config.Default().Runbooks
	cfg.Dir, cfg.Host = t.TempDir(), "rb-1"
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg })
	rb := httptest.NewServer(srv.Handler())
	t.Cleanup(rb.Close)

	get := func(url string, auth ...string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range auth {
			req.Header.Add("Authorization", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
	}
	alice, admin := "Bearer "+e.tokens["alice"], "Bearer "+e.tokens["admin"]
	for _, c := range []struct{ url, first, second string }{
		{e.url + "/v1/orders", alice, admin},
		{e.url + "/v1/orders", admin, admin},
		{e.url + "/v1/orders", alice, "Basic eDp5"},
		{rb.URL + "/v1/runbooks", alice, admin},
		// A delegated token first: still two credentials.
		{rb.URL + "/v1/runbooks", "Bearer orderly-rb-0123456789", alice},
	} {
		code, challenge, body := get(c.url, c.first, c.second)
		if code != http.StatusUnauthorized || !strings.Contains(body, `"code":"unauthenticated"`) ||
			!strings.Contains(body, "2 Authorization headers: send one") || !strings.Contains(challenge, `error="invalid_request"`) {
			t.Errorf("GET %s with %.12s… and %.12s…: %d %q %s", c.url, c.first, c.second, code, challenge, body)
		}
	}
	for _, url := range []string{e.url + "/v1/orders", rb.URL + "/v1/runbooks"} {
		if code, _, body := get(url, alice); code != http.StatusOK {
			t.Errorf("GET %s with one header: %d %s", url, code, body)
		}
	}

	a := e.publish("alice", "two-auth", "", map[string]any{"command": "true"}, "Authorization", admin)
	if a.Error == nil || a.Error.Code != "unauthenticated" || !strings.Contains(a.Error.Message, "2 Authorization headers") {
		t.Fatalf("a NATS submission with two Authorization headers: %+v (error %+v)", a, a.Error)
	}
	if b := e.publish("alice", "two-auth", "", map[string]any{"command": "true"}); b.Order == nil {
		t.Fatalf("the same submission with one: %+v (error %+v)", b, b.Error)
	}
}

// TestCredentialsInTheQueryStayOutOfTheAudit: a client that puts its
// credential in the query string (as an EventSource must, or by mistake)
// is refused 401, and the audit row of the refusal keeps the query
// without the credential: rejections are read by auditors, and a token
// there would be a working token in their hands. Values of parameters
// named like credentials are redacted, and so are values shaped like
// orderly's tokens, a delegated runbook token or a JWT, whatever their
// parameter's name.
func TestCredentialsInTheQueryStayOutOfTheAudit(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	secret := e.tokens["alice"]
	jwtLike := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
	for _, query := range []string{
		"access_token=" + secret + "&limit=5",
		"token=" + secret,
		"limit=5&API_KEY=" + secret,
		"auth=Bearer%20" + secret,
		"q=" + jwtLike,
		secret,
		"x=orderly-rb-0123456789abcdef0123456789abcdef",
	} {
		code, b := e.do("", "GET", "/v1/orders?"+query, nil)
		if code != http.StatusUnauthorized {
			t.Fatalf("?%s without Authorization: %d %s", query, code, b)
		}
	}
	rows, err := e.pool.Query(t.Context(), `SELECT coalesce(request->>'query', '') FROM rejections WHERE path = '/v1/orders'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			t.Fatal(err)
		}
		n++
		for _, leak := range []string{secret, jwtLike, "0123456789abcdef0123456789abcdef"} {
			if strings.Contains(q, leak) {
				t.Errorf("the audit keeps a credential of the query: %q", q)
			}
		}
	}
	if n != 7 {
		t.Fatalf("%d audit rows of the refusals, want 7", n)
	}
	// What is not a credential is kept, for the audit to be of use.
	var q string
	if err := e.pool.QueryRow(t.Context(), `SELECT request->>'query' FROM rejections WHERE request->>'query' LIKE 'access_token=%'`).Scan(&q); err != nil ||
		q != "access_token=[redacted]&limit=5" {
		t.Errorf("the redacted query: %q, %v", q, err)
	}
}

// TestAQueryTokenNamedInARefusalStaysOutOfTheAudit: a token sent as a bare
// part of the query, or as a parameter's name, is refused as a parameter
// the operation does not take, and the refusal's message, which the
// audit keeps as its reason, does not repeat it.
func TestAQueryTokenNamedInARefusalStaysOutOfTheAudit(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	secret := e.tokens["alice"]
	for _, query := range []string{secret, secret + "=1", "limit=5&" + secret + "&" + secret, "Bearer%20" + secret} {
		code, b := e.do("alice", "GET", "/v1/orders?"+query, nil)
		if code != http.StatusBadRequest {
			t.Fatalf("?%s: %d %s", query, code, b)
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("?%s: the refusal repeats the token: %s", query, b)
		}
	}
	rows, err := e.pool.Query(t.Context(), `SELECT reason, coalesce(request->>'query', '') FROM rejections WHERE path = '/v1/orders'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var reason, q string
		if err := rows.Scan(&reason, &q); err != nil {
			t.Fatal(err)
		}
		n++
		if strings.Contains(reason, secret) || strings.Contains(q, secret) {
			t.Errorf("the audit keeps the token: reason %q, query %q", reason, q)
		}
	}
	if n != 4 {
		t.Fatalf("%d audit rows of the refusals, want 4", n)
	}
}
