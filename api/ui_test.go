package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// TestUISignInCookies: over TLS the session cookie is Secure and
// host-only (__Host-, Path=/) as well as HttpOnly and SameSite=Strict; a sign-in form without this browser's
// nonce, or with a wrong token, starts no session.
func TestUISignInCookies(t *testing.T) {
	e := newUIEnv(t)
	get := httptest.NewRequest("GET", "https://orderly.example/ui/signin", nil)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, get)
	var nonce *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "__Host-orderly_signin" {
			nonce = c
		}
	}
	if rec.Code != http.StatusOK || nonce == nil || !nonce.Secure || !nonce.HttpOnly || nonce.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in page: %d, nonce cookie %+v", rec.Code, nonce)
	}
	post := func(formNonce, token string) *httptest.ResponseRecorder {
		form := url.Values{"signin": {formNonce}, "token": {token}, "next": {"/ui/history"}}
		return e.postForm("https://orderly.example/ui/signin", form, &http.Cookie{Name: nonce.Name, Value: nonce.Value})
	}
	sessionOf := func(rec *httptest.ResponseRecorder) *http.Cookie {
		for _, c := range rec.Result().Cookies() {
			if c.Name == "__Host-orderly_session" && c.Value != "" {
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
	// The refusal is in the audit, without the token.
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE source = 'ui' AND status = 401
		AND NOT (rejections::text LIKE '%not-a-token%')`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("audited ui sign-in refusals: %d, %v", n, err)
	}
	rec = post(nonce.Value, e.tokens["alice"])
	s := sessionOf(rec)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/history" || s == nil ||
		!s.Secure || !s.HttpOnly || s.SameSite != http.SameSiteStrictMode || s.Path != "/" {
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
	rec = e.postForm("https://orderly.example/ui/signin", form, &http.Cookie{Name: nonce.Name, Value: nonce.Value})
	if loc := rec.Header().Get("Location"); loc != "/ui/" {
		t.Fatalf("sign-in with next=//evil.example/ redirects to %q", loc)
	}
}

// TestUICookiesAreHostOnlyOverTLS: over TLS the sign-in nonce and the
// session cookie are named with the __Host- prefix, which a browser
// accepts only from this host itself, over HTTPS, for Path=/ and without
// a Domain. A cookie without the prefix is not read over TLS: one that
// another subdomain of the site, or a network attacker answering a
// plain-HTTP request for any name of it, set for this host (cookie
// tossing) could otherwise carry the attacker's own session, or the
// nonce of a sign-in form the attacker filled with its token, and sign
// the victim's browser in as the attacker's principal: whatever the
// victim then runs and sees is the attacker's to read.
func TestUICookiesAreHostOnlyOverTLS(t *testing.T) {
	e := newUIEnv(t)
	const base = "https://orderly.example"
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest("GET", base+"/ui/signin", nil))
	var nonce *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "__Host-orderly_signin" {
			nonce = c
		}
	}
	if nonce == nil || !nonce.Secure || nonce.Path != "/" || nonce.Domain != "" {
		t.Fatalf("sign-in page over TLS: nonce cookie %+v in %v", nonce, rec.Result().Cookies())
	}
	// A tossed nonce (no prefix) with the form it belongs to: refused.
	form := url.Values{"signin": {"attackers-nonce"}, "token": {e.tokens["alice"]}}
	if rec := e.postForm(base+"/ui/signin", form, &http.Cookie{Name: "orderly_signin", Value: "attackers-nonce"}); rec.Code != http.StatusForbidden {
		t.Fatalf("sign-in over TLS with an unprefixed nonce cookie: %d, want 403", rec.Code)
	}
	form = url.Values{"signin": {nonce.Value}, "token": {e.tokens["alice"]}}
	rec = e.postForm(base+"/ui/signin", form, &http.Cookie{Name: nonce.Name, Value: nonce.Value})
	var sess *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "__Host-orderly_session" && c.Value != "" {
			sess = c
		}
	}
	if rec.Code != http.StatusSeeOther || sess == nil || !sess.Secure || !sess.HttpOnly || sess.Path != "/" || sess.Domain != "" ||
		sess.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in over TLS: %d, session cookie %+v", rec.Code, sess)
	}
	dashboard := func(c *http.Cookie) int {
		req := httptest.NewRequest("GET", base+"/ui/", nil)
		req.AddCookie(c)
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := dashboard(&http.Cookie{Name: sess.Name, Value: sess.Value}); code != http.StatusOK {
		t.Fatalf("dashboard with the __Host- session: %d", code)
	}
	// The same live session id under the unprefixed name, as a tossed
	// cookie would carry the attacker's: not a session over TLS.
	if code := dashboard(&http.Cookie{Name: "orderly_session", Value: sess.Value}); code != http.StatusSeeOther {
		t.Fatalf("dashboard over TLS with an unprefixed session cookie: %d, want 303 to the sign-in page", code)
	}
	// Over plain HTTP (no TLS to protect) the names stay as they were.
	plain, _ := e.uiSession(t, "alice")
	if plain.Name != "orderly_session" || plain.Path != "/ui/" {
		t.Fatalf("session cookie over plain HTTP: %+v", plain)
	}
}

// TestUICookiesSecureBehindATLSProxy: behind a proxy of
// acl.trusted_proxies that ends TLS and says so (X-Forwarded-Proto:
// https), the sign-in and session cookies are Secure, as over TLS to the
// API; the same header from any other peer is not believed.
func TestUICookiesSecureBehindATLSProxy(t *testing.T) {
	e := newUIEnv(t)
	acl, err := netacl.New(config.ACL{TrustedProxies: []string{"192.0.2.1"}})
	if err != nil {
		t.Fatal(err)
	}
	e.acl.Store(acl)
	for _, c := range []struct {
		peer, proto string
		secure      bool
	}{
		{"192.0.2.1:40000", "https", true},
		{"192.0.2.1:40000", "http, https", true},
		{"192.0.2.1:40000", "https, http", false},
		{"192.0.2.1:40000", "", false},
		{"192.0.2.99:40000", "https", false},
	} {
		req := httptest.NewRequest("GET", "/ui/signin", nil)
		req.RemoteAddr = c.peer
		req.Header.Set("X-Forwarded-For", "198.51.100.7")
		if c.proto != "" {
			req.Header.Set("X-Forwarded-Proto", c.proto)
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		prefix := ""
		if c.secure {
			prefix = "__Host-" // host-only over TLS
		}
		var nonce *http.Cookie
		for _, ck := range rec.Result().Cookies() {
			if ck.Name == prefix+"orderly_signin" {
				nonce = ck
			}
		}
		if rec.Code != http.StatusOK || nonce == nil {
			t.Fatalf("sign-in page from %s: %d", c.peer, rec.Code)
		}
		form := url.Values{"signin": {nonce.Value}, "token": {e.tokens["alice"]}}
		req = httptest.NewRequest("POST", "/ui/signin", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = c.peer
		req.Header.Set("X-Forwarded-For", "198.51.100.7")
		if c.proto != "" {
			req.Header.Set("X-Forwarded-Proto", c.proto)
		}
		req.AddCookie(nonce)
		rec = httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		var sess *http.Cookie
		for _, ck := range rec.Result().Cookies() {
			if ck.Name == prefix+"orderly_session" {
				sess = ck
			}
		}
		if sess == nil || nonce.Secure != c.secure || sess.Secure != c.secure {
			t.Errorf("peer %s, X-Forwarded-Proto %q: nonce cookie Secure %v, session cookie %+v; want Secure %v",
				c.peer, c.proto, nonce.Secure, sess, c.secure)
		}
	}
}

// uiSession signs who in through the handler and returns the session
// cookie and the page's anti-forgery token.
func (e *uiEnv) uiSession(t *testing.T, who string) (*http.Cookie, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/signin", nil))
	var nonce *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "orderly_signin" {
			nonce = c
		}
	}
	form := url.Values{"signin": {nonce.Value}, "token": {e.tokens[who]}}
	rec = e.postForm("/ui/signin", form, nonce)
	var sess *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == "orderly_session" {
			sess = c
		}
	}
	if sess == nil {
		t.Fatalf("sign-in as %s: %d", who, rec.Code)
	}
	body := e.page(t, sess, "/ui/")
	_, after, _ := strings.Cut(body, `data-csrf="`)
	csrf, _, _ := strings.Cut(after, `"`)
	return sess, csrf
}

// page GETs a UI page with the session and returns its HTML.
func (e *uiEnv) page(t *testing.T, sess *http.Cookie, path string) string {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.AddCookie(sess)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", path, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// postForm POSTs form to target through the handler with cookie, as a
// browser submits a page's form. A run's form carries the definition its
// page shows (def): unless the test sets its own, the one a page
// rendered now shows.
func (e *uiEnv) postForm(target string, form url.Values, cookie *http.Cookie) *httptest.ResponseRecorder {
	if _, set := form["def"]; !set && strings.HasSuffix(target, "/run") {
		if def := e.shownDef(target, cookie); def != "" {
			form = maps.Clone(form)
			form.Set("def", def)
		}
	}
	req := httptest.NewRequest("POST", target, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(cookie)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// shownDef is the def field of the form that posts to target, on the
// page that shows it now (the dashboard, or the runbook's page); "" when
// there is none.
func (e *uiEnv) shownDef(target string, cookie *http.Cookie) string {
	page := "/ui/"
	if rb, ok := strings.CutPrefix(target, "/ui/runbooks/"); ok {
		page = "/ui/runbooks/" + strings.TrimSuffix(rb, "/run")
	}
	req := httptest.NewRequest("GET", page, nil)
	req.AddCookie(cookie)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	_, form, ok := strings.Cut(rec.Body.String(), `action="`+target+`"`)
	if !ok {
		return ""
	}
	form, _, _ = strings.Cut(form, "</form>")
	m := regexp.MustCompile(`name="def" value="([^"]*)"`).FindStringSubmatch(form)
	if m == nil {
		return ""
	}
	return m[1]
}

// waitPage GETs path every 100 ms until its HTML contains want, and
// returns it; after 30 s the test fails saying what did not finish.
func (e *uiEnv) waitPage(t *testing.T, sess *http.Cookie, path, want, what string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for tick := time.NewTicker(100 * time.Millisecond); ; <-tick.C {
		page := e.page(t, sess, path)
		if strings.Contains(page, want) {
			return page
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not finish:\n%s", what, page)
		}
	}
}

// TestUIRerunAsksSecretsAgain: a run with a secret param shows only the
// param's name; its re-run form has the other values and an empty secret
// field, and says the secret must be given again. The secret is in no
// page.
func TestUIRerunAsksSecretsAgain(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.door": {"back"}, "p.pin": {"4711"}, "idem": {"k1"}}
	rec := e.postForm("/ui/actions/unlock/run", form, sess)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/orders/") {
		t.Fatalf("run unlock: %d %q\n%s", rec.Code, loc, rec.Body)
	}
	run := e.waitPage(t, sess, loc, `id="status" role="status" aria-live="polite">succeeded`, "unlock")
	if !strings.Contains(run, "unlocking back with 4 digits") || !strings.Contains(run, "pin=•••") || strings.Contains(run, "4711") {
		t.Fatalf("run page:\n%s", run)
	}
	id := strings.TrimPrefix(loc, "/ui/orders/")
	again := e.page(t, sess, "/ui/?rerun="+id)
	if strings.Contains(again, "4711") || !strings.Contains(again, "give pin again") {
		t.Fatalf("re-run form shows the secret or does not ask for it:\n%s", again)
	}
	if !strings.Contains(again, `<option value="back"  selected>`) && !strings.Contains(again, `<option value="back" selected>`) {
		_, frag, _ := strings.Cut(again, `id="p-unlock-door"`)
		t.Fatalf("re-run form does not keep door=back:\n%.400s", frag)
	}
}

// TestUIRunbookRun: the dashboard lists the runbook; its page asks for
// its variables and a host; running it leads to its run page.
func TestUIRunbookRun(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	if dash := e.page(t, sess, "/ui/"); !strings.Contains(dash, `href="/ui/runbooks/Hello.md"`) {
		t.Fatal("the dashboard does not list the runbook")
	}
	if rb := e.page(t, sess, "/ui/runbooks/Hello.md"); !strings.Contains(rb, `name="env.NAME"`) {
		t.Fatalf("the runbook page has no field for NAME:\n%s", rb)
	}
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "env.NAME": {"<b>bob</b>"}, "confirmed": {"yes"}}
	rec := e.postForm("/ui/runbooks/Hello.md/run", form, sess)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/orders/") {
		t.Fatalf("run the runbook: %d %q\n%s", rec.Code, loc, rec.Body)
	}
	run := e.waitPage(t, sess, loc, `aria-live="polite">succeeded`, "the runbook")
	if !strings.Contains(run, "hello from a runbook, &lt;b&gt;bob&lt;/b&gt;") || !strings.Contains(run, "runbook Hello.md") {
		t.Fatalf("runbook run page:\n%s", run)
	}
}

// TestUIRunbookPageNamesItsDefaultHost: the runbook page's host field
// shows where a run that names no host goes (runbooks.host; serve fills
// in its own host), and with none set it is required, as the API
// refuses such a run. Its placeholder said "(runbooks.host)" whatever
// the config, which a newcomer on serve read as a key to set first.
func TestUIRunbookPageNamesItsDefaultHost(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	page := e.page(t, sess, "/ui/runbooks/Hello.md")
	if !strings.Contains(page, `id="rb-host" name="host" list="host-list" autocomplete="off" placeholder="default: web-1">`) {
		_, frag, _ := strings.Cut(page, `id="rb-host"`)
		t.Fatalf("the host field does not name runbooks.host's web-1:\n%.300s", frag)
	}
	// Left empty, the run goes there.
	form := url.Values{"csrf": {csrf}, "host": {""}, "env.NAME": {"bob"}, "confirmed": {"yes"}}
	rec := e.postForm("/ui/runbooks/Hello.md/run", form, sess)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/orders/") {
		t.Fatalf("run the runbook on its default host: %d %q\n%s", rec.Code, loc, rec.Body)
	}
	if run := e.waitPage(t, sess, loc, `aria-live="polite">succeeded`, "the runbook"); !strings.Contains(run, "web-1") {
		t.Fatalf("the run page does not show web-1:\n%s", run)
	}

	e.noRunbookHost.Store(true)
	page = e.page(t, sess, "/ui/runbooks/Hello.md")
	if !strings.Contains(page, `id="rb-host" name="host" list="host-list" autocomplete="off" placeholder="required: no runbooks.host is set" required>`) {
		_, frag, _ := strings.Cut(page, `id="rb-host"`)
		t.Fatalf("with no runbooks.host the host field is not required:\n%.300s", frag)
	}
}

// TestUIRunbookShowsBidiControls: a runbook's page shows its script in
// the order it runs. A bidi override in it (Trojan Source: the
// script reads "echo safe # is it?" and runs something else) showed
// reordered, on the page a person reads before pressing Run; it now
// shows as its escape, in the script, the name and the title, and on
// the dashboard's list.
func TestUIRunbookShowsBidiControls(t *testing.T) {
	e := newUIEnv(t)
	fence := "```"
	book := "# Tidy \u202eylno gnidaer\n\n# Environment Requirements\n" + fence + "yaml\n{}\n" + fence + "\n\n" +
		"# File System Requirements\n" + fence + "yaml\nInput: []\n" + fence + "\n\n" +
		"# Script\n" + fence + "sh\necho safe \u2067# ;rm -rf /srv/data\u2069 \u2066# is it?\u2069\n" + fence + "\n"
	if err := os.WriteFile(filepath.Join(e.rbDir, "Tidy.md"), []byte(book), 0o644); err != nil {
		t.Fatal(err)
	}
	sess, _ := e.uiSession(t, "alice")
	for _, path := range []string{"/ui/runbooks/Tidy.md", "/ui/"} {
		page := e.page(t, sess, path)
		if strings.ContainsFunc(page, func(r rune) bool { return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) }) {
			t.Errorf("%s holds a bidi control as it is:\n%s", path, page)
		}
		if !strings.Contains(page, `Tidy <span class="ctl">\u202e</span>ylno gnidaer`) {
			t.Errorf("%s does not show the runbook's name with its override as an escape", path)
		}
		if path == "/ui/runbooks/Tidy.md" && !strings.Contains(page, `echo safe <span class="ctl">\u2067</span># ;rm -rf /srv/data<span class="ctl">\u2069</span>`) {
			t.Errorf("the runbook page does not show the script with its isolates as escapes:\n%s", page)
		}
	}
}

// TestUIActionShowsBidiControls: an action's title and description, its
// params' labels and help, and its enum values are operator-written text
// shown before a person presses Run: a bidi control in them (an override
// that shows "Wipe gnihton" for what reads otherwise) is shown as its
// escape, as a runbook's script is. The values the form sends stay as
// they are. A runbook variable's description likewise.
func TestUIActionShowsBidiControls(t *testing.T) {
	e := newUIEnv(t)
	fence := "```"
	book := "# Vars\n\n# Environment Requirements\n" + fence + "yaml\nDIR: Keeps \u2067/srv/data\u2069 safe\n" + fence + "\n\n" +
		"# File System Requirements\n" + fence + "yaml\nInput: []\n" + fence + "\n\n" +
		"# Script\n" + fence + "sh\necho \"$DIR\"\n" + fence + "\n\n# History\n"
	// Its file name holds an override too ("Vars.dm" would read "Vars.md").
	const file = "Vars\u202ed.md"
	if err := os.WriteFile(filepath.Join(e.rbDir, file), []byte(book), 0o644); err != nil {
		t.Fatal(err)
	}
	bidi := func(r rune) bool { return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) }
	sess, _ := e.uiSession(t, "erin")
	page := e.page(t, sess, "/ui/")
	_, form, _ := strings.Cut(page, `id="action-wipe"`)
	form, _, _ = strings.Cut(form, "</form>")
	// The enum value is sent as it is: it is the value the API checks.
	sent := regexp.MustCompile(`value="dry[^"]*"`).FindString(form)
	shownText := strings.ReplaceAll(form, sent, "")
	if form == "" || strings.ContainsFunc(shownText, bidi) {
		t.Errorf("the wipe form shows a bidi control as it is:\n%s", form)
	}
	for _, want := range []string{
		`data-confirm="Run Wipe \u202enothing\u202c?"`,
		`<h3>Wipe <span class="ctl">\u202e</span>nothing<span class="ctl">\u202c</span></h3>`,
		`Keeps <span class="ctl">\u2067</span>/srv/data<span class="ctl">\u2069</span> safe.`,
		`Dir <span class="ctl">\u2066</span>x<span class="ctl">\u2069</span>`,
		`<small class="help">Which <span class="ctl">\u202d</span>ir<span class="ctl">\u202c</span></small>`,
		`>dry\u202erun</option>`,
		`id="run-wipe">Wipe <span class="ctl">\u202e</span>nothing<span class="ctl">\u202c</span></button>`,
	} {
		if !strings.Contains(form, want) {
			t.Errorf("the wipe form does not hold %s:\n%s", want, form)
		}
	}
	if sent != "value=\"dry\u202erun\"" {
		t.Errorf("the enum value is sent as %s, want it as it is", sent)
	}
	alice, _ := e.uiSession(t, "alice")
	page = e.page(t, alice, "/ui/runbooks/"+url.PathEscape(file))
	if strings.Contains(page, `class="error"`) || strings.ContainsFunc(page, bidi) || !strings.Contains(page, `Keeps <span class="ctl">\u2067</span>/srv/data<span class="ctl">\u2069</span> safe`) {
		t.Errorf("the runbook page does not show its variable's description with its isolates as escapes:\n%s", page)
	}
	for _, p := range []string{"/ui/", "/ui/runbooks/" + url.PathEscape(file)} {
		if page := e.page(t, alice, p); strings.ContainsFunc(page, bidi) || !strings.Contains(page, `Vars<span class="ctl">\u202e</span>d.md`) {
			t.Errorf("%s does not show the runbook's file name with its override as an escape", p)
		}
	}
}

// TestUIRunbookFormPostedTwice: each rendering of a runbook's page
// carries its own idempotency key, so the same form posted twice (a
// double click, a resent POST) is one run, and both posts lead to it; a
// form rendered again is a run of its own.
func TestUIRunbookFormPostedTwice(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	keyOf := func() string {
		page := e.page(t, sess, "/ui/runbooks/Hello.md")
		m := regexp.MustCompile(`name="idem" value="([^"]+)"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("the runbook form carries no idempotency key:\n%s", page)
		}
		return m[1]
	}
	runs := func() int {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE runbook = 'Hello.md'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	key := keyOf()
	form := url.Values{"csrf": {csrf}, "idem": {key}, "host": {"web-1"}, "env.NAME": {"twice"}, "confirmed": {"yes"}}
	var locs []string
	for range 2 {
		rec := e.postForm("/ui/runbooks/Hello.md/run", form, sess)
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/ui/orders/") {
			t.Fatalf("post the runbook form: %d\n%s", rec.Code, rec.Body)
		}
		locs = append(locs, rec.Header().Get("Location"))
	}
	if locs[0] != locs[1] || runs() != 1 {
		t.Fatalf("the form posted twice led to %v with %d runs recorded; want one run", locs, runs())
	}
	if again := keyOf(); again == key {
		t.Fatal("a new rendering of the form has the same key")
	} else {
		form.Set("idem", again)
	}
	if rec := e.postForm("/ui/runbooks/Hello.md/run", form, sess); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") == locs[0] {
		t.Fatalf("the form rendered again: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	if n := runs(); n != 2 {
		t.Fatalf("%d runs recorded, want 2", n)
	}
}

// TestUIRunbookNamesInURLs: runbook names with '#', '?' or '%' are links
// and forms to themselves: pct%41.md runs pct%41.md, not pctA.md.
func TestUIRunbookNamesInURLs(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	dash := e.page(t, sess, "/ui/")
	for _, want := range []string{`href="/ui/runbooks/a%23b.md"`, `href="/ui/runbooks/pct%2541.md"`} {
		if !strings.Contains(dash, want) {
			t.Errorf("the dashboard lacks %s", want)
		}
	}
	if rb := e.page(t, sess, "/ui/runbooks/pct%2541.md"); !strings.Contains(rb, `action="/ui/runbooks/pct%2541.md/run"`) {
		t.Fatalf("the page of pct%%41.md posts elsewhere:\n%s", rb)
	}
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "env.NAME": {"x"}, "confirmed": {"yes"}}
	rec := e.postForm("/ui/runbooks/pct%2541.md/run", form, sess)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("run pct%%41.md: %d\n%s", rec.Code, rec.Body)
	}
	run := e.waitPage(t, sess, loc, `aria-live="polite">succeeded`, "pct%41.md")
	if !strings.Contains(run, "percent runbook, x") {
		t.Fatalf("the run of pct%%41.md:\n%s", run)
	}
}

// TestUIActionChoices: a param whose values come from the host's units is
// a dropdown of those units with their state; a unit whose value the
// param's rules refuse is listed but cannot be chosen.
func TestUIActionChoices(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	// The dashboard offers a host once its worker has announced itself
	// (its first heartbeat), and only then loads the host's choices.
	e.waitPage(t, sess, "/ui/", `hx-get="/ui/actions/restart/choices" hx-trigger="load"`,
		"the dashboard loading the restart action's choices")
	frag := e.page(t, sess, "/ui/actions/restart/choices?host=web-1")
	for _, want := range []string{
		`<option value="0042"  >0042 (active, running)</option>`,
		`<option value="0043"  >0043 (failed)</option>`,
		`<option value="beta" disabled >beta (inactive, dead)</option>`,
	} {
		if !strings.Contains(frag, want) {
			t.Fatalf("choices fragment lacks %s:\n%s", want, frag)
		}
	}
	carol, _ := e.uiSession(t, "carol")
	req := httptest.NewRequest("GET", "/ui/actions/restart/choices?host=web-1", nil)
	req.AddCookie(carol)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Fatalf("carol asking for restart's choices: %d, want the API's 404", rec.Code)
	}
}

// TestUIRerunKeepsTheCommand: the exec form holds one argument per line,
// so an order whose arguments hold a line break or end with an empty one
// is not pre-filled (it would re-run as another command); any other is.
func TestUIRerunKeepsTheCommand(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	submit := func(args []string) string {
		b, _ := json.Marshal(map[string]any{"host": "nowhere", "command": "sh", "args": args})
		req := httptest.NewRequest("POST", "/v1/orders", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		var o api.Order
		if rec.Code != http.StatusAccepted || json.Unmarshal(rec.Body.Bytes(), &o) != nil {
			t.Fatalf("submit %q: %d %s", args, rec.Code, rec.Body)
		}
		return o.ID.String()
	}
	// The box's value as a browser reads it: HTML drops one line break
	// right after <textarea>.
	argsBox := func(page string) string {
		_, rest, _ := strings.Cut(page, `id="exec-args"`)
		_, rest, _ = strings.Cut(rest, ">")
		box, _, _ := strings.Cut(rest, "</textarea>")
		return strings.TrimPrefix(box, "\n")
	}
	// A bidi override would show the argument reordered in the box:
	// "rm abc<U+202E>fdp.exe" reads "rm abcexe.pdf".
	for _, args := range [][]string{{"-c", "echo first\necho second"}, {"-c", "echo $1", "x", ""}, {"-c", "echo abc\u202efdp.exe"}} {
		page := e.page(t, sess, "/ui/?rerun="+submit(args))
		if !strings.Contains(page, "cannot be re-run from here") || argsBox(page) != "" {
			t.Errorf("re-run of %q: arguments box %q, or no reason given", args, argsBox(page))
		}
	}
	page := e.page(t, sess, "/ui/?rerun="+submit([]string{"-c", "echo plain"}))
	if strings.Contains(page, "cannot be re-run") || argsBox(page) != "-c\necho plain" {
		t.Errorf("re-run of a plain order: arguments box %q", argsBox(page))
	}
	page = e.page(t, sess, "/ui/?rerun="+submit([]string{"", "x"}))
	if strings.Contains(page, "cannot be re-run") || argsBox(page) != "\nx" {
		t.Errorf("re-run with a leading empty argument: arguments box %q, want \"\\nx\"", argsBox(page))
	}
}

// TestUIFormTooLarge: a form past http.max_body_bytes is refused for its
// size (413), not as a forgery: its csrf field was never read.
func TestUIFormTooLarge(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"cat"}, "stdin": {strings.Repeat("x", 1200<<10)}}
	rec := e.postForm("/ui/exec", form, sess)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "larger than") {
		t.Fatalf("a 1.2 MB form: %d\n%.300s", rec.Code, rec.Body)
	}
}

// TestUIDashboardFormsKeyedApart: the forms of one dashboard rendering
// carry one idempotency key. A form pressed twice is one run; another
// form of the same page (pressed after the first, on a page the Back
// button restored without scripts, or while the first press was still
// under way) was refused as "this idempotency key was already used for
// a different request", and now runs.
func TestUIDashboardFormsKeyedApart(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	post := func(target string, form url.Values) string {
		t.Helper()
		form.Set("csrf", csrf)
		form.Set("idem", "one-rendering")
		rec := e.postForm(target, form, sess)
		if rec.Code != http.StatusSeeOther {
			_, msg, _ := strings.Cut(rec.Body.String(), `id="error"`)
			t.Fatalf("POST %s: %d%.200s", target, rec.Code, msg)
		}
		return rec.Header().Get("Location")
	}
	exec := post("/ui/exec", url.Values{"host": {"web-1"}, "command": {"true"}})
	tag := post("/ui/actions/tag/run", url.Values{"host": {"web-1"}, "p.n": {"0042"}})
	again := post("/ui/actions/tag/run", url.Values{"host": {"web-1"}, "p.n": {"0042"}})
	note := post("/ui/actions/note/run", url.Values{"host": {"web-1"}, "p.text": {"hi"}})
	if tag == exec || note == tag || note == exec || again != tag {
		t.Fatalf("exec %s, tag %s, tag again %s, note %s: want three runs, the tag pressed twice one", exec, tag, again, note)
	}
}

// TestUIRefusedActionKeepsItsValues: an action run the API refuses comes
// back with the refusal and the values as sent, a secret's excepted.
func TestUIRefusedActionKeepsItsValues(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.door": {"back"}, "p.pin": {"9x9x"}, "idem": {"k-refused"}}
	rec := e.postForm("/ui/actions/unlock/run", form, sess)
	page := rec.Body.String()
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(page, "Action unlock: ") {
		t.Fatalf("a refused run: %d\n%.500s", rec.Code, page)
	}
	if !strings.Contains(page, `<option value="back"  selected>`) && !strings.Contains(page, `<option value="back" selected>`) {
		_, frag, _ := strings.Cut(page, `id="p-unlock-door"`)
		t.Errorf("the refused form lost door=back:\n%.400s", frag)
	}
	if strings.Contains(page, "9x9x") {
		t.Error("the refused form shows the secret it was sent")
	}
}

// TestUIConfirmationIsAskedByTheServer: an action with confirm: true runs
// from the UI only with the form's confirmation (the dialog's, or without
// JavaScript the checkbox's), so a browser without scripts does not run it
// on the first click; an action without confirm needs none.
func TestUIConfirmationIsAskedByTheServer(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.who": {"bob"}, "idem": {"k-unconfirmed"}}
	rec := e.postForm("/ui/actions/greet/run", form, sess)
	page := rec.Body.String()
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(page, "Action greet: confirm the run first") ||
		!strings.Contains(page, `id="confirmed-greet" name="confirmed" type="checkbox" value="yes" required`) {
		t.Fatalf("an unconfirmed run: %d\n%.800s", rec.Code, page)
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM orders WHERE action = 'greet'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("orders of greet after an unconfirmed run: %d (%v), want 0", n, err)
	}
	form.Set("confirmed", "yes")
	if rec := e.postForm("/ui/actions/greet/run", form, sess); rec.Code != http.StatusSeeOther {
		t.Fatalf("a confirmed run: %d\n%.500s", rec.Code, rec.Body)
	}
	form = url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.n": {"0042"}, "idem": {"k-tag"}}
	if rec := e.postForm("/ui/actions/tag/run", form, sess); rec.Code != http.StatusSeeOther {
		t.Fatalf("a run of an action without confirm: %d\n%.500s", rec.Code, rec.Body)
	}
	// A runbook's run is always confirmed; it ran at once from a page
	// without JavaScript.
	form = url.Values{"csrf": {csrf}, "host": {"web-1"}, "env.NAME": {"x"}, "idem": {"k-rb"}}
	rec = e.postForm("/ui/runbooks/Hello.md/run", form, sess)
	page = rec.Body.String()
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(page, "Confirm the run first (nothing was run).") ||
		!strings.Contains(page, `id="rb-confirmed" name="confirmed" type="checkbox" value="yes" required`) {
		t.Fatalf("an unconfirmed runbook run: %d\n%.800s", rec.Code, page)
	}
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM orders WHERE runbook = 'Hello.md'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("runs of Hello.md after an unconfirmed run: %d (%v), want 0", n, err)
	}
	form.Set("confirmed", "yes")
	if rec := e.postForm("/ui/runbooks/Hello.md/run", form, sess); rec.Code != http.StatusSeeOther {
		t.Fatalf("a confirmed runbook run: %d\n%.500s", rec.Code, rec.Body)
	}
}

// TestUIExecStdinAsTyped: a browser sends the stdin box's line breaks as
// CRLF; the command reads them as typed, LF, as from the CLI.
func TestUIExecStdinAsTyped(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"cat"}, "stdin": {"a\r\nb\r\n"}}
	loc := e.exec(t, sess, form)
	e.waitPage(t, sess, loc, `id="status" role="status" aria-live="polite">succeeded`, "cat")
	req := httptest.NewRequest("GET", "/v1/orders/"+strings.TrimPrefix(loc, "/ui/orders/"), nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	got := httptest.NewRecorder()
	e.handler.ServeHTTP(got, req)
	var o api.Order
	if err := json.Unmarshal(got.Body.Bytes(), &o); err != nil || o.Result == nil || o.Result.Stdout.Content != "a\nb\n" {
		t.Fatalf("stdout of cat: %d %s", got.Code, got.Body)
	}
}

// TestUIExecBlankArgumentsAreNone: an arguments box with only line
// breaks (an Enter pressed in it) runs the command with no arguments, not
// with one empty argument that the form could not carry into a re-run.
func TestUIExecBlankArgumentsAreNone(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	for _, args := range []string{"\r\n", "\r\n\r\n", "\n"} {
		loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"nowhere"}, "command": {"true"}, "args": {args}})
		req := httptest.NewRequest("GET", "/v1/orders/"+strings.TrimPrefix(loc, "/ui/orders/"), nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		got := httptest.NewRecorder()
		e.handler.ServeHTTP(got, req)
		var o api.Order
		if err := json.Unmarshal(got.Body.Bytes(), &o); err != nil || len(o.Args) != 0 {
			t.Errorf("arguments box %q: the order has args %q: %d %s", args, o.Args, got.Code, got.Body)
		}
		if page := e.page(t, sess, "/ui/?rerun="+o.ID.String()); strings.Contains(page, "cannot be re-run") {
			t.Errorf("arguments box %q: the form cannot re-run its own order", args)
		}
	}
}

// TestUIRecentOrdersAreOwn: the dashboard's recent orders are the
// principal's own, an admin's too (History shows an admin everyone's).
func TestUIRecentOrdersAreOwn(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"true"}})
	_, recent, _ := strings.Cut(e.page(t, sess, "/ui/"), `id="recent-h"`)
	if !strings.Contains(recent, loc) {
		t.Errorf("alice's dashboard lacks her order %s", loc)
	}
	boss, _ := e.uiSession(t, "boss")
	_, recent, _ = strings.Cut(e.page(t, boss, "/ui/"), `id="recent-h"`)
	if strings.Contains(recent, loc) {
		t.Errorf("the admin's recent orders show alice's order %s", loc)
	}
	if history := e.page(t, boss, "/ui/history"); !strings.Contains(history, loc) {
		t.Errorf("the admin's history lacks alice's order %s", loc)
	}
	// The last day a date field takes reaches past what RFC 3339 writes.
	if history := e.page(t, boss, "/ui/history?since=2000-01-01&until=9999-12-31"); !strings.Contains(history, loc) {
		t.Errorf("the history until 9999-12-31 lacks alice's order %s", loc)
	}
}

// TestUIParamHelp: a param's description is its field's help, as text.
func TestUIParamHelp(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	page := e.page(t, sess, "/ui/")
	if !strings.Contains(page, `Who <small class="help">Lower-case letters, &lt;i&gt;not&lt;/i&gt; markup.</small></label>`) {
		_, field, _ := strings.Cut(page, `for="p-greet-who"`)
		t.Errorf("the who field has no help, or it is not escaped:\n%.300s", field)
	}
}

// TestUIEmptyFieldIsSent: a field left empty is sent empty when its
// param has no default, so the API checks "" against the param's rules,
// as it does a run over REST: a required param whose pattern allows ""
// runs from the form (its field is not required in the page), and one
// whose pattern refuses it is refused for that, not as missing. A field
// of a param with a default left empty takes the default.
func TestUIEmptyFieldIsSent(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	page := e.page(t, sess, "/ui/")
	_, field, _ := strings.Cut(page, `id="p-note-text"`)
	field, _, _ = strings.Cut(field, ">")
	_, who, _ := strings.Cut(page, `id="p-greet-who"`)
	who, _, _ = strings.Cut(who, ">")
	if strings.Contains(field, "required") || !strings.Contains(who, "required") {
		t.Errorf("text (may be empty) is required in the page, or who (may not) is not:\n%s\n%s", field, who)
	}
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.text": {""}, "p.tag": {""}, "idem": {"k-empty"}}
	rec := e.postForm("/ui/actions/note/run", form, sess)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/orders/") {
		t.Fatalf("run note with an empty text: %d %q\n%.500s", rec.Code, loc, rec.Body)
	}
	e.waitPage(t, sess, loc, "noted[] misc", "note")
	form = url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.who": {""}, "idem": {"k-empty-who"}, "confirmed": {"yes"}}
	rec = e.postForm("/ui/actions/greet/run", form, sess)
	if body := rec.Body.String(); rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body, "does not match") {
		t.Fatalf("run greet with an empty who: %d, want refused for its pattern\n%.500s", rec.Code, body)
	}
}

// TestUIRequiredDropdownAsksForAChoice: the dropdown of a param without
// a default starts on an empty "(choose)" entry, which its required
// attribute keeps the browser from sending. Without it, a browser selects
// the first value, and a click on the button (and yes in its dialog,
// which names no value) ran the action with a door or a unit the user
// never picked. A re-run's value is still the one selected.
func TestUIRequiredDropdownAsksForAChoice(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	e.waitPage(t, sess, "/ui/", `hx-get="/ui/actions/restart/choices" hx-trigger="load"`,
		"the dashboard loading the restart action's choices")
	for _, c := range []struct{ path, id string }{
		{"/ui/", "p-unlock-door"},
		{"/ui/actions/restart/choices?host=web-1", "p-restart-id"},
	} {
		if got, ok := browserChoice(e.page(t, sess, c.path), c.id); !ok || got != "" {
			t.Errorf("%s: the dropdown %s starts on %q (found %v), want the empty (choose) entry", c.path, c.id, got, ok)
		}
	}
}

// browserChoice is the value a browser selects in the select element id
// of page before anyone touches it: the last option marked selected, or
// else the first one not disabled (HTML's selectedness setting
// algorithm). An option without a value attribute has its text as value.
func browserChoice(page, id string) (string, bool) {
	_, sel, ok := strings.Cut(page, `<select id="`+id+`"`)
	if !ok {
		return "", false
	}
	sel, _, _ = strings.Cut(sel, "</select>")
	var first, selected string
	var hasFirst, hasSelected bool
	for _, m := range regexp.MustCompile(`<option([^>]*)>([^<]*)`).FindAllStringSubmatch(sel, -1) {
		v := regexp.MustCompile(`value="([^"]*)"`).FindStringSubmatch(m[1])
		if v == nil {
			v = []string{"", strings.TrimSpace(m[2])}
		}
		switch {
		case regexp.MustCompile(`\sselected\b`).MatchString(m[1]):
			selected, hasSelected = v[1], true
		case !hasFirst && !regexp.MustCompile(`\sdisabled\b`).MatchString(m[1]):
			first, hasFirst = v[1], true
		}
	}
	if hasSelected {
		return selected, true
	}
	return first, hasFirst
}

// TestUIRedirectAndStatic: /ui keeps its query on the way to /ui/ (a
// re-run link), and the static tree serves files, not listings.
func TestUIRedirectAndStatic(t *testing.T) {
	e := newUIEnv(t)
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	if rec := get("/ui?rerun=abc"); rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "/ui/?rerun=abc" {
		t.Errorf("/ui?rerun=abc: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	if rec := get("/ui/static/"); rec.Code != http.StatusNotFound {
		t.Errorf("/ui/static/: %d, want 404 (no listing)\n%.200s", rec.Code, rec.Body)
	}
	if rec := get("/ui/static/ui.css"); rec.Code != http.StatusOK {
		t.Errorf("/ui/static/ui.css: %d", rec.Code)
	}
	// A name no embedded file can have (invalid UTF-8, an overlong
	// encoding of '.', a NUL) is a file that is not there: fs.Sub
	// refused the first two with fs.ErrInvalid, which http.FileServer
	// answered 500.
	for _, p := range []string{"/ui/static/%ff", "/ui/static/%C0%AE%C0%AE/ui.css", "/ui/static/ui%00.css"} {
		if rec := get(p); rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404\n%.200s", p, rec.Code, rec.Body)
		}
	}
}

// TestUIHeadOnPages: a UI page answers HEAD like GET, and a HEAD on a
// run page's live stream answers at once instead of streaming until the
// order ends (web-9 has no worker: the order stays queued).
func TestUIHeadOnPages(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-9"}, "command": {"true"}})
	for _, c := range []struct{ path, contentType string }{
		{"/ui/", "text/html"}, {loc, "text/html"}, {loc + "/events", "text/event-stream"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		req := httptest.NewRequestWithContext(ctx, http.MethodHead, c.path, nil)
		req.AddCookie(sess)
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		late := ctx.Err()
		cancel()
		if late != nil || rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), c.contentType) {
			t.Errorf("HEAD %s: %d %s (%v), want 200 %s", c.path, rec.Code, rec.Header().Get("Content-Type"), late, c.contentType)
		}
	}
	// No session: sent to sign in, as a GET is.
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/ui/history", nil))
	if rec.Code != http.StatusSeeOther {
		t.Errorf("HEAD /ui/history without a session: %d, want 303", rec.Code)
	}
}

// TestUISignOutEndsStreams: signing out ends the live streams the session
// opened, though the token behind it still works (the API's own check
// would let them run to the order's end).
func TestUISignOutEndsStreams(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"sleep"}, "args": {"30"}})
	defer e.postForm(loc+"/cancel", url.Values{"csrf": {csrf}, "signal": {"SIGKILL"}}, sess)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+loc+"/events", nil)
	req.AddCookie(sess)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1)
	if _, err := resp.Body.Read(first); err != nil {
		t.Fatalf("the stream sent nothing: %d %v", resp.StatusCode, err)
	}
	// Sign out from another tab: a fetch of /ui/signout with the token.
	out := httptest.NewRequest(http.MethodPost, "/ui/signout", nil)
	out.Header.Set("X-CSRF-Token", csrf)
	out.AddCookie(sess)
	e.handler.ServeHTTP(httptest.NewRecorder(), out)
	if _, err := io.Copy(io.Discard, resp.Body); ctx.Err() != nil {
		t.Fatalf("the stream went on after the sign-out: %v", err)
	}
}

// exec submits the command form with the session and returns the run
// page it leads to.
func (e *uiEnv) exec(t *testing.T, sess *http.Cookie, form url.Values) string {
	t.Helper()
	rec := e.postForm("/ui/exec", form, sess)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/orders/") {
		t.Fatalf("exec %s: %d %q\n%s", form.Get("command"), rec.Code, loc, rec.Body)
	}
	return loc
}

// TestUIListingsCarryNoOutputs: the history and the dashboard's recent
// orders show no output, so the UI's listings get none from the native
// API (whose answer the UI holds whole): with a few large outputs in the
// history, every dashboard view read and buffered all of them.
func TestUIListingsCarryNoOutputs(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	for range 3 {
		loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"seq"}, "args": {"1\n900000"}})
		e.waitPage(t, sess, loc, `id="status" role="status" aria-live="polite">succeeded`, "seq")
	}
	// What the API read of the outputs, not the process's heap: the worker
	// and the NATS server, busy beside the page on a loaded machine (the
	// outputs' live chunks and their roll-up), moved that too.
	for _, path := range []string{"/ui/", "/ui/history"} {
		before := e.apiStore.read.Load()
		page := e.page(t, sess, path)
		if read := e.apiStore.read.Load() - before; read != 0 {
			t.Errorf("GET %s read %d bytes of outputs (they are 6.3 MB each)", path, read)
		}
		if len(page) > 1<<20 {
			t.Errorf("GET %s is a page of %d bytes", path, len(page))
		}
	}
}

// TestUIHostsPageOfAFleet: the hosts page shows every host's queue depth
// and queued orders with three API calls whatever the fleet's size. It made
// one call per host before, for the first 50 hosts only: a larger fleet
// showed no queue at all, and a smaller one spent most of a person's
// rate limit on every 5 s refresh (here 6 a minute, which two pages fit).
func TestUIHostsPageOfAFleet(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	const hosts = 60
	queued := map[string]uuid.UUID{}
	for i := range hosts {
		h := fmt.Sprintf("fleet-%02d", i)
		if _, err := e.pool.Exec(t.Context(), `INSERT INTO hosts (host, version) VALUES ($1, 'test')`, h); err != nil {
			t.Fatal(err)
		}
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: h, Command: "true", Timeout: time.Minute,
			Principal: "alice", Source: "rest"}
		if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
			t.Fatal(err)
		}
		queued[h] = o.ID
	}
	e.ratePerPrincipal.Store(6)
	for range 2 {
		page := e.page(t, sess, "/ui/hosts")
		for h, id := range queued {
			row := regexp.MustCompile(`(?s)<td>` + h + `</td>.*?</tr>`).FindString(page)
			if !strings.Contains(row, "<td>1 <a") || !strings.Contains(row, `href="/ui/orders/`+id.String()+`"`) {
				t.Fatalf("host %s's row shows no queue of one order %s:\n%s", h, id, row)
			}
		}
	}
}

// TestUIHostsPageShowsStandby: the hosts page marks a host a second
// worker stands by for, naming that worker, as `orderly hosts` does.
func TestUIHostsPageShowsStandby(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	// The bucket's TTL is 2 s here: report as the workers do, until the
	// test ends.
	defer keepBeating(t, func(ctx context.Context, now time.Time) {
		_ = e.q.Heartbeat(ctx, queue.HostInfo{Host: "ui-sb", Instance: "ui-sb/a", Version: "v1", StartedAt: now, LastSeen: now})
		_, _ = e.q.StandbyBeat(ctx, queue.HostInfo{Host: "ui-sb", Instance: "ui-sb/b", Version: "v2", StartedAt: now, LastSeen: now})
	})()
	deadline := time.Now().Add(10 * time.Second)
	for {
		page := e.page(t, sess, "/ui/hosts")
		row := regexp.MustCompile(`(?s)<td>ui-sb</td>.*?</tr>`).FindString(page)
		if strings.Contains(row, `>standby</span>`) && strings.Contains(row, `ui-sb/b (version v2)`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host's row shows no standby:\n%s", row)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUIHostsPageShowsAWorkerCutOffFromPostgres: the hosts page marks an
// online host whose worker cannot reach PostgreSQL, since when, as
// `orderly hosts` does; before, the row said "online" like any other
// while the host's orders piled up. The error is not shown to a
// submitter (the API leaves it out), and a healthy host gets no mark.
func TestUIHostsPageShowsAWorkerCutOffFromPostgres(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	const why = "FATAL: sorry, too many clients already (SQLSTATE 53300)"
	since := time.Now().Add(-time.Hour).UTC()
	defer keepBeating(t, func(ctx context.Context, now time.Time) {
		_ = e.q.Heartbeat(ctx, queue.HostInfo{Host: "ui-pg", Instance: "ui-pg/a", Version: "v1", StartedAt: now, LastSeen: now,
			PostgresUnreachable: &queue.PostgresOutage{Since: since, Error: why, Failures: 42}})
		_ = e.q.Heartbeat(ctx, queue.HostInfo{Host: "ui-ok", Instance: "ui-ok/a", Version: "v1", StartedAt: now, LastSeen: now})
	})()
	deadline := time.Now().Add(10 * time.Second)
	for {
		page := e.page(t, sess, "/ui/hosts")
		row := regexp.MustCompile(`(?s)<td>ui-pg</td>.*?</tr>`).FindString(page)
		ok := regexp.MustCompile(`(?s)<td>ui-ok</td>.*?</tr>`).FindString(page)
		// Both hosts' first heartbeats are two writes: a page read between
		// them lists ui-pg alone.
		if ok != "" && strings.Contains(row, `>no PostgreSQL</span>`) && strings.Contains(row, `42 failed attempts`) && strings.Contains(row, since.Format(time.RFC3339)) {
			if strings.Contains(row, "53300") {
				t.Errorf("the error is shown to a submitter:\n%s", row)
			}
			if strings.Contains(ok, "no PostgreSQL") {
				t.Errorf("the healthy host's row: %q, want it without the mark", ok)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host's row shows no outage of PostgreSQL, or the healthy host is not listed:\n%s\nhealthy host: %q", row, ok)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUIFormBoundToItsDefinition: a form posted after its action or
// runbook changed (a reload while the page was open) runs nothing: 409,
// the page says the action changed and shows its form as it is now,
// without the values typed into the old one (pin, secret then, is not
// echoed in a field that no longer is one). A form of the new rendering
// runs. A runbook whose file changed likewise.
func TestUIFormBoundToItsDefinition(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	old := e.shownDef("/ui/actions/unlock/run", sess)
	if old == "" {
		t.Fatal("the unlock form carries no definition")
	}
	// The reload: pin is no longer secret, and goes on the command line.
	acts := uiActions()
	for i, d := range acts.Definitions {
		if d.Name == "unlock" {
			acts.Definitions[i].Command = []string{"echo", "unlocking", "{door}", "with", "{pin}"}
			acts.Definitions[i].Env = nil
			acts.Definitions[i].Params[1].Secret = false
		}
	}
	set, err := action.New(acts)
	if err != nil {
		t.Fatal(err)
	}
	e.actions.Store(set)
	count := func(name string) int {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE action = $1 OR runbook = $1`, name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	form := url.Values{"csrf": {csrf}, "host": {"web-1"}, "p.door": {"back"}, "p.pin": {"4711"}, "idem": {"k-old"}, "def": {old}}
	rec := e.postForm("/ui/actions/unlock/run", form, sess)
	page := rec.Body.String()
	if rec.Code != http.StatusConflict || !strings.Contains(page, "Action unlock changed since the page was loaded; nothing was run. Its form below is as it is now") {
		t.Fatalf("a form of the old definition: %d\n%.800s", rec.Code, page)
	}
	if strings.Contains(page, "4711") {
		t.Error("the refused form shows the value typed into the old form's secret field")
	}
	if n := count("unlock"); n != 0 {
		t.Fatalf("%d orders of unlock after a form of its old definition, want 0", n)
	}
	// The refusal is audited without the values it was sent.
	deadline := time.Now().Add(10 * time.Second)
	for tick := time.NewTicker(50 * time.Millisecond); ; <-tick.C {
		var request string
		err := e.pool.QueryRow(t.Context(), `SELECT request::text FROM rejections WHERE code = 'conflict' AND path = '/v1/actions/unlock/run'`).Scan(&request)
		if err == nil {
			if strings.Contains(request, "4711") || strings.Contains(request, "back") {
				t.Fatalf("the audit of the refusal keeps the values sent: %s", request)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refusal was not audited: %v", err)
		}
	}
	now := e.shownDef("/ui/actions/unlock/run", sess)
	if now == old || !strings.Contains(page, `name="def" value="`+now+`"`) {
		t.Fatalf("the form shown again is not bound to the definition now (%s, was %s)", now, old)
	}
	// Without a definition at all: refused as well.
	form.Set("def", "")
	if rec := e.postForm("/ui/actions/unlock/run", form, sess); rec.Code != http.StatusConflict {
		t.Fatalf("a form without its definition: %d, want 409", rec.Code)
	}
	form.Set("def", now)
	if rec := e.postForm("/ui/actions/unlock/run", form, sess); rec.Code != http.StatusSeeOther {
		t.Fatalf("a form of the definition now: %d\n%.500s", rec.Code, rec.Body)
	}

	// A runbook edited while its page was open.
	rbOld := e.shownDef("/ui/runbooks/Hello.md/run", sess)
	book, err := os.ReadFile(filepath.Join(e.rbDir, "Hello.md"))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(book), `echo "hello from a runbook, $NAME"`, `echo "goodbye, $NAME"`, 1)
	if err := os.WriteFile(filepath.Join(e.rbDir, "Hello.md"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	form = url.Values{"csrf": {csrf}, "idem": {"k-rb-old"}, "host": {"web-1"}, "env.NAME": {"x"}, "def": {rbOld}, "confirmed": {"yes"}}
	rec = e.postForm("/ui/runbooks/Hello.md/run", form, sess)
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "The runbook changed since the page was loaded; nothing was run.") ||
		!strings.Contains(rec.Body.String(), "goodbye, $NAME") {
		t.Fatalf("a runbook form of the old file: %d\n%.800s", rec.Code, rec.Body)
	}
	if n := count("Hello.md"); n != 0 {
		t.Fatalf("%d runs of Hello.md after a form of its old file, want 0", n)
	}
	form.Del("def") // the page's own
	if rec := e.postForm("/ui/runbooks/Hello.md/run", form, sess); rec.Code != http.StatusSeeOther {
		t.Fatalf("a runbook form of the file now: %d\n%.500s", rec.Code, rec.Body)
	}
}

// TestUIMessagesShowBidiControls: what a page quotes besides an action's
// or a runbook's own text (an error page's message, a runbook's
// problems, a run page's runbook, principal and error) shows a bidi
// control as its escape, as the rest of the page does: "x" U+202E
// "gpj.md" read as "xdm.jpg".
func TestUIMessagesShowBidiControls(t *testing.T) {
	e := newUIEnv(t)
	fence := "```"
	book := func(env string) string {
		return "# Plain\n\n# Environment Requirements\n" + fence + "yaml\n" + env + "\n" + fence + "\n\n" +
			"# File System Requirements\n" + fence + "yaml\nInput: []\n" + fence + "\n\n" +
			"# Script\n" + fence + "sh\necho fine\n" + fence + "\n\n# History\n"
	}
	if err := os.WriteFile(filepath.Join(e.rbDir, "x\u202egpj.md"), []byte(book("{}")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rbDir, "Bad.md"), []byte(book("\"A\u202eB\": a variable of a name no shell takes")), 0o644); err != nil {
		t.Fatal(err)
	}
	sess, csrf := e.uiSession(t, "alice")
	raw := func(r rune) bool { return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) }
	get := func(path string) (int, string) {
		req := httptest.NewRequest("GET", path, nil)
		req.AddCookie(sess)
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	if code, page := get("/ui/runbooks/" + url.PathEscape("y\u202egpj.md")); code != http.StatusNotFound ||
		strings.ContainsFunc(page, raw) || !strings.Contains(page, `y<span class="ctl">\u202e</span>gpj.md`) {
		t.Errorf("the error page of a runbook not found: %d\n%s", code, page)
	}
	if code, page := get("/ui/runbooks/Bad.md"); code != http.StatusOK || strings.ContainsFunc(page, raw) ||
		!strings.Contains(page, `A<span class="ctl">\u202e</span>B`) {
		t.Errorf("the page of a runbook with a problem: %d\n%s", code, page)
	}
	rec := e.postForm("/ui/runbooks/"+url.PathEscape("x\u202egpj.md")+"/run",
		url.Values{"csrf": {csrf}, "idem": {"k-bidi"}, "host": {"web-1"}, "confirmed": {"yes"}}, sess)
	if rec.Code != http.StatusSeeOther {
		_, msg, _ := strings.Cut(rec.Body.String(), `id="problem"`)
		t.Fatalf("run x\\u202egpj.md: %d%.300s", rec.Code, msg)
	}
	if code, page := get(rec.Header().Get("Location")); code != http.StatusOK || strings.ContainsFunc(page, raw) {
		t.Errorf("the run page of x\\u202egpj.md: %d\n%s", code, page)
	}
}

// TestUITimeoutIsADecimalNumber: the dashboard's timeout was read by
// strconv.ParseFloat, so 1e-400 (0 to a float64) ran with the default
// timeout, and 0x1p3 with 8 s; both are refused as text that is no number
// of seconds, as the API refuses them in a body.
func TestUITimeoutIsADecimalNumber(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	for _, timeout := range []string{"1e-400", "0x1p3", "+5", "Inf"} {
		form := url.Values{"csrf": {csrf}, "idem": {"k-timeout-" + timeout}, "host": {"web-1"}, "command": {"true"}, "timeout_seconds": {timeout}}
		rec := e.postForm("/ui/exec", form, sess)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "Timeout must be a number of seconds.") {
			t.Errorf("timeout %q: %d, want 400 and the refusal", timeout, rec.Code)
		}
	}
	form := url.Values{"csrf": {csrf}, "idem": {"k-timeout-ok"}, "host": {"web-1"}, "command": {"true"}, "timeout_seconds": {"2.5e0"}}
	if rec := e.postForm("/ui/exec", form, sess); rec.Code != http.StatusSeeOther {
		t.Errorf("timeout 2.5e0: %d, want the run", rec.Code)
	}
}

// TestUIActionPicksAnOnlineHost: an action's host dropdown starts on a
// host whose worker is online and marks the others offline. A host is
// known from one queued order for it (a typo's, web-0 here), and the
// dropdown started on the first known host by name, so a click on the
// restart button queued a run on a host no worker serves.
func TestUIActionPicksAnOnlineHost(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	e.oneHostOnline(t)
	page := e.page(t, sess, "/ui/")
	if got, ok := browserChoice(page, "host-greet"); !ok || got != "web-1" {
		t.Errorf("greet's host dropdown starts on %q (found %v), want web-1, the host with a worker online", got, ok)
	}
	if !strings.Contains(page, `>web-0 (offline)</option>`) || strings.Contains(page, `>web-1 (offline)</option>`) {
		t.Errorf("the dropdown does not mark web-0 alone offline:\n%s", page)
	}
}

// oneHostOnline queues an order for web-0, a host no worker serves
// (known from that order alone), and waits until web-1's worker is
// online: two known hosts, one online.
func (e *uiEnv) oneHostOnline(t *testing.T) {
	t.Helper()
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "web-0", Command: "true", Timeout: time.Minute,
		Principal: "alice", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	e.waitOnline(t, "web-1")
}

// waitOnline waits until host's worker is online: its first heartbeat
// is in.
func (e *uiEnv) waitOnline(t *testing.T, host string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for tick := time.NewTicker(100 * time.Millisecond); ; <-tick.C {
		req := httptest.NewRequest("GET", "/v1/hosts/"+host, nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		var h api.Host
		if rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &h) == nil && h.Online {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's worker is not online: %d %s", host, rec.Code, rec.Body)
		}
	}
}

// TestUIExecFormStartsOnTheOnlineHost (no browser): the command form's
// host starts on the one host with a worker online, as on a fresh `make
// run` (it was empty, and the browser refused the form with "Please fill
// out this field"); a host known only from its orders does not count,
// and with two online hosts the field names neither.
func TestUIExecFormStartsOnTheOnlineHost(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	e.oneHostOnline(t)
	field := func(page string) string {
		_, after, ok := strings.Cut(page, `<input id="exec-host"`)
		if !ok {
			t.Fatalf("no command form's host field:\n%s", page)
		}
		tag, _, _ := strings.Cut(after, ">")
		return tag
	}
	if tag := field(e.page(t, sess, "/ui/")); !strings.Contains(tag, `value="web-1"`) {
		t.Errorf("with web-1 alone online, the host field is%s>; want it to start on web-1", tag)
	}
	e.startWorker("web-2")
	e.waitOnline(t, "web-2")
	if tag := field(e.page(t, sess, "/ui/")); !strings.Contains(tag, `value=""`) {
		t.Errorf("with web-1 and web-2 online, the host field is%s>; want it empty", tag)
	}
}

// TestUIRunPageHostNote (no browser): the run page of an order queued for
// a host without a worker says that no worker of it is online; that of
// an order its online worker runs says nothing of the kind.
func TestUIRunPageHostNote(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	loc := e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-9"}, "command": {"true"}})
	if page := e.page(t, sess, loc); !strings.Contains(page, "No worker of host web-9 is online (never seen)") {
		t.Fatalf("the run page of an order for a host without a worker:\n%s", page)
	}
	loc = e.exec(t, sess, url.Values{"csrf": {csrf}, "host": {"web-1"}, "command": {"sleep"}, "args": {"30"}})
	defer e.postForm(loc+"/cancel", url.Values{"csrf": {csrf}, "signal": {"SIGKILL"}}, sess)
	page := e.waitPage(t, sess, loc, `badge running`, "the order to run")
	if strings.Contains(page, "is offline") || strings.Contains(page, "is online") {
		t.Fatalf("the run page of an order its online worker runs says the host is offline:\n%s", page)
	}
}

// TestUIRecordedNotQueuedLeadsToTheOrder (no browser): a run whose order
// is recorded while NATS is unavailable (503, "recorded but not yet
// queued", naming the order) leads to that order's run page, which says
// it runs once the bus is back. The dashboard showed the answer as a
// refusal, its forms ready with a new idempotency key: pressing Run
// again ran the action a second time.
func TestUIRecordedNotQueuedLeadsToTheOrder(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	e.failPublish.Store(true)
	for _, c := range []struct {
		target string
		form   url.Values
	}{
		{"/ui/actions/greet/run", url.Values{"csrf": {csrf}, "host": {"web-9"}, "p.who": {"bob"}, "confirmed": {"yes"}, "idem": {"a1"}}},
		{"/ui/exec", url.Values{"csrf": {csrf}, "host": {"web-9"}, "command": {"true"}, "idem": {"x1"}}},
		{"/ui/runbooks/Hello.md/run", url.Values{"csrf": {csrf}, "host": {"web-9"}, "env.NAME": {"bob"}, "confirmed": {"yes"}, "idem": {"r1"}}},
	} {
		rec := e.postForm(c.target, c.form, sess)
		loc := rec.Header().Get("Location")
		if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/orders/") {
			t.Fatalf("POST %s with the order recorded, not queued: %d %q\n%s", c.target, rec.Code, loc, rec.Body)
		}
		if page := e.page(t, sess, loc); !strings.Contains(page, "Do not run it again") || !strings.Contains(page, "badge queued") {
			t.Fatalf("the run page of a recorded order:\n%s", page)
		}
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE principal = 'alice'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("alice's orders: %d (%v), want 3", n, err)
	}
}

// TestUIRunShownAgainAfterAnUnknownOutcome (no browser): a run answered
// 5xx (PostgreSQL unavailable: a restart may have lost the answer to a
// commit) shows its form again with the key it was posted with and says
// that running it again runs it at most once; run again once the
// database is back, it is one order. The form came back with a new key:
// had the first press been recorded, the second ran it twice.
func TestUIRunShownAgainAfterAnUnknownOutcome(t *testing.T) {
	e := newUIEnv(t)
	sess, csrf := e.uiSession(t, "alice")
	// web-6's orders meet a database that is going away.
	if _, err := e.pool.Exec(t.Context(), `CREATE FUNCTION ui_test_down() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.host = 'web-6' THEN RAISE EXCEPTION 'terminating connection due to administrator command' USING ERRCODE = '57P01'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER ui_test_down BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION ui_test_down()`); err != nil {
		t.Fatal(err)
	}
	forms := []struct {
		target string
		form   url.Values
	}{
		{"/ui/actions/greet/run", url.Values{"csrf": {csrf}, "host": {"web-6"}, "p.who": {"bob"}, "confirmed": {"yes"}, "idem": {"key-a"}}},
		{"/ui/exec", url.Values{"csrf": {csrf}, "host": {"web-6"}, "command": {"true"}, "idem": {"key-x"}}},
		{"/ui/runbooks/Hello.md/run", url.Values{"csrf": {csrf}, "host": {"web-6"}, "env.NAME": {"bob"}, "confirmed": {"yes"}, "idem": {"key-r"}}},
	}
	for _, c := range forms {
		rec := e.postForm(c.target, c.form, sess)
		page := rec.Body.String()
		if rec.Code < 500 || !strings.Contains(page, `name="idem" value="`+c.form.Get("idem")+`"`) ||
			!strings.Contains(page, "runs it at most once") {
			t.Fatalf("POST %s, the database unavailable: %d\n%s", c.target, rec.Code, page)
		}
	}
	if _, err := e.pool.Exec(t.Context(), `DROP TRIGGER ui_test_down ON orders`); err != nil {
		t.Fatal(err)
	}
	for _, c := range forms {
		var locs []string
		for range 2 { // run again, and once more: one order
			rec := e.postForm(c.target, c.form, sess)
			if rec.Code != http.StatusSeeOther {
				t.Fatalf("POST %s again: %d\n%s", c.target, rec.Code, rec.Body)
			}
			locs = append(locs, rec.Header().Get("Location"))
		}
		if locs[0] != locs[1] {
			t.Fatalf("POST %s twice with one key: %v, want one order", c.target, locs)
		}
	}
}

// keepBeating calls beat every 200 ms, as a worker's heartbeat goes on,
// until the function it returns is called, which waits for the last beat.
func keepBeating(t *testing.T, beat func(ctx context.Context, now time.Time)) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for ctx.Err() == nil {
			beat(ctx, time.Now())
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-beating }
}
