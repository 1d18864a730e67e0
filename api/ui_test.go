package api_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestUISignInCookies: over TLS the session cookie is Secure as well as
// HttpOnly and SameSite=Strict; a sign-in form without this browser's
// nonce, or with a wrong token, starts no session.
func TestUISignInCookies(t *testing.T) {
	e := newUIEnv(t)
	get := httptest.NewRequest("GET", "https://orderly.example/ui/signin", nil)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, get)
	var nonce *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "orderly_signin" {
			nonce = c
		}
	}
	if rec.Code != http.StatusOK || nonce == nil || !nonce.Secure || !nonce.HttpOnly || nonce.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in page: %d, nonce cookie %+v", rec.Code, nonce)
	}
	post := func(formNonce, token string) *httptest.ResponseRecorder {
		form := url.Values{"signin": {formNonce}, "token": {token}, "next": {"/ui/history"}}
		req := httptest.NewRequest("POST", "https://orderly.example/ui/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: nonce.Name, Value: nonce.Value})
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		return rec
	}
	sessionOf := func(rec *httptest.ResponseRecorder) *http.Cookie {
		for _, c := range rec.Result().Cookies() {
			if c.Name == "orderly_session" && c.Value != "" {
				return c
			}
		}
		return nil
	}
	if rec := post("forged", e.tokens["alice"]); rec.Code != http.StatusForbidden || sessionOf(rec) != nil {
		t.Fatalf("sign-in with a forged nonce: %d, session %v", rec.Code, sessionOf(rec))
	}
	if rec := post(nonce.Value, "not-a-token"); rec.Code != http.StatusUnauthorized || sessionOf(rec) != nil {
		t.Fatalf("sign-in with a wrong token: %d, session %v", rec.Code, sessionOf(rec))
	}
	rec = post(nonce.Value, e.tokens["alice"])
	s := sessionOf(rec)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/history" || s == nil ||
		!s.Secure || !s.HttpOnly || s.SameSite != http.SameSiteStrictMode || s.Path != "/ui/" {
		t.Fatalf("sign-in: %d to %q, session cookie %+v", rec.Code, rec.Header().Get("Location"), s)
	}
	if strings.Contains(s.Value, e.tokens["alice"]) {
		t.Fatal("the cookie carries the token")
	}
	// Pages forbid framing and load scripts only from this origin.
	req := httptest.NewRequest("GET", "https://orderly.example/ui/", nil)
	req.AddCookie(&http.Cookie{Name: s.Name, Value: s.Value})
	rec = httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'self'") ||
		rec.Header().Get("X-Frame-Options") != "DENY" {
		t.Fatalf("dashboard: %d, headers %v", rec.Code, rec.Header())
	}
	// An open redirect after sign-in is not possible.
	form := url.Values{"signin": {nonce.Value}, "token": {e.tokens["alice"]}, "next": {"//evil.example/"}}
	req = httptest.NewRequest("POST", "https://orderly.example/ui/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: nonce.Name, Value: nonce.Value})
	rec = httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if loc := rec.Header().Get("Location"); loc != "/ui/" {
		t.Fatalf("sign-in with next=//evil.example/ redirects to %q", loc)
	}
}
