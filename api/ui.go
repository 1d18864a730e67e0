package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// The web UI (/ui/, docs/ui.md) is a client of the REST API that runs in
// the same process: every page and every form becomes a request to the
// native /v1 routes, sent through the same router with the signed-in
// person's own credential. So the network ACL, rate limits,
// authentication, policy, validation, audit and error codes are exactly
// those of REST; the UI has no authorization of its own to get wrong.

// Cookie names. Over plain HTTP the session cookie is scoped to /ui/ and
// the sign-in nonce to /ui/signin; over TLS both carry the __Host- prefix
// and Path=/ (uiCookie).
const (
	uiSessionCookie = "orderly_session"
	uiSigninCookie  = "orderly_signin" // anti-forgery for the sign-in form
)

// hostOnlyPrefix names the cookies over TLS. A browser takes a cookie so
// named only from this host itself, over HTTPS, with Path=/ and no
// Domain. A plain name can be set for this host by another subdomain of
// the site, or by a network attacker answering a plain-HTTP request for
// any name of it (cookie tossing): with its own session id, or the nonce
// of a sign-in form filled with its own token, it would sign the victim's
// browser in as the attacker's principal, whose history then holds what
// the victim runs. Over TLS a plain name is not read at all.
const hostOnlyPrefix = "__Host-"

// uiCookie is the name of cookie base for r, and the path it is set for:
// base with the __Host- prefix and / over TLS, base and path otherwise.
func (u *webUI) uiCookie(r *http.Request, base, path string) (name, cookiePath string) {
	if u.overTLS(r) {
		return hostOnlyPrefix + base, "/"
	}
	return base, path
}

// sessionCookie is r's session cookie under the name r's transport uses.
func (u *webUI) sessionCookie(r *http.Request) (*http.Cookie, error) {
	name, _ := u.uiCookie(r, uiSessionCookie, "")
	return r.Cookie(name)
}

// webUI serves /ui/.
type webUI struct {
	s        *Server
	native   http.Handler // the router with the /v1 routes the UI calls
	sessions *uiSessions
	pages    *uiPages
}

// uiKey carries the request's session in its context.
type uiKey struct{}

func sessionOf(r *http.Request) *uiSession {
	sess, _ := r.Context().Value(uiKey{}).(*uiSession)
	return sess
}

// webUIHandler is the /ui/ subtree. native is the router that holds /v1.
func (s *Server) webUIHandler(native http.Handler) http.Handler {
	u := &webUI{s: s, native: native, sessions: newUISessions(time.Now), pages: mustParsePages()}
	r := chi.NewRouter()
	r.Use(uiHeaders)
	r.Use(s.limitIP)
	r.Handle("/static/*", http.StripPrefix("/ui/static/", uiStatic()))
	r.Get("/signin", u.signinPage)
	r.Post("/signin", u.signin)
	r.Group(func(r chi.Router) {
		r.Use(u.requireSession)
		r.Get("/", u.dashboard)
		r.Post("/signout", u.signout)
		r.Post("/exec", u.submitExec)
		r.Get("/orders/{id}", u.runPage)
		r.Get("/orders/{id}/events", u.events)
		r.Get("/orders/{id}/output/{stream}", u.download)
		r.Post("/orders/{id}/cancel", u.cancel)
		r.Get("/history", u.history)
		r.Get("/hosts", u.hosts)
		r.Get("/runbooks/{name}", u.runbookPage)
		r.Post("/runbooks/{name}/run", u.runRunbook)
		r.Get("/actions/{name}/choices", u.actionChoices)
		r.Post("/actions/{name}/run", u.runAction)
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		u.pages.errorPage(w, r, http.StatusNotFound, "No such page.")
	})
	ui := r
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allowedMethods(ui, strings.TrimPrefix(r.URL.Path, "/ui")))
		u.pages.errorPage(w, r, http.StatusMethodNotAllowed, "This page does not take a "+r.Method+" request.")
	})
	return r
}

// uiHeaders keeps pages out of frames and caches and allows scripts,
// styles and connections only from this origin (htmx is served from the
// binary, never a CDN).
func uiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.URL.Path == "/ui" { // the session cookie's path is /ui/
			to := "/ui/"
			if r.URL.RawQuery != "" {
				to += "?" + r.URL.RawQuery // ?rerun= and the like
			}
			http.Redirect(w, r, to, http.StatusMovedPermanently)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireSession sends a browser with no live session to the sign-in
// page, and refuses any POST whose anti-forgery token (form field csrf or
// header X-CSRF-Token) is not the session's.
func (u *webUI) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sess *uiSession
		if c, err := u.sessionCookie(r); err == nil {
			sess = u.sessions.get(c.Value, !autoRefresh(r))
		}
		if sess != nil {
			// The credential is checked again on every request: a token
			// removed by a config reload or an expired JWT signs out.
			if _, err := u.s.Auth().Authenticate("Bearer " + sess.token); err != nil {
				if c, err := u.sessionCookie(r); err == nil {
					u.sessions.drop(c.Value)
				}
				sess = nil
			}
		}
		if sess == nil {
			if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.Header.Get("HX-Request") == "" {
				http.Redirect(w, r, "/ui/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			u.pages.errorPage(w, r, http.StatusUnauthorized, "Your session has ended. Sign in again.")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			got := r.Header.Get("X-CSRF-Token")
			if got == "" {
				limit := u.s.Settings().MaxBodyBytes
				r.Body = http.MaxBytesReader(w, r.Body, limit)
				if err := r.ParseForm(); err != nil {
					// Past the limit the form is unread, its csrf field
					// too: say what is wrong, not "forgery".
					var tooBig *http.MaxBytesError
					if errors.As(err, &tooBig) {
						u.pages.errorPage(w, r, http.StatusRequestEntityTooLarge,
							fmt.Sprintf("The form is larger than %d bytes (http.max_body_bytes).", limit))
						return
					}
				}
				got = r.PostFormValue("csrf")
			}
			if !sess.validCSRF(got) {
				u.s.logger.Warn("ui form refused: anti-forgery token missing or wrong", "principal", sess.principal, "path", r.URL.Path)
				u.pages.errorPage(w, r, http.StatusForbidden, "This form is not from your session (anti-forgery check failed). Reload the page and try again.")
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), uiKey{}, sess)))
	})
}

// uiRefreshHeader marks a page's automatic refresh (the hosts page polls
// every 5 s with it, hx-headers): not a person's activity, so it does not
// keep the session from going idle. A client that sends it on its own
// only lets its own session end sooner.
const uiRefreshHeader = "X-Orderly-Refresh"

// autoRefresh reports whether r is a page's automatic request: an htmx
// GET that carries uiRefreshHeader, or a run page's event stream
// connecting, which its browser does again by itself after a cut (and
// the page after a refused reconnect, with a growing pause). An open
// stream keeps its session from going idle (events); its connections
// alone, refused again and again, must not.
func autoRefresh(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	return r.Header.Get("HX-Request") == "true" && r.Header.Get(uiRefreshHeader) == "auto" ||
		r.Header.Get("Accept") == "text/event-stream"
}

// apiAnswer is the outcome of a call to the native API.
type apiAnswer struct {
	status int
	body   []byte
	header http.Header
}

// ok reports a 2xx answer.
func (a apiAnswer) ok() bool { return a.status >= 200 && a.status < 300 }

// decode reads the answer's JSON body into v.
func (a apiAnswer) decode(v any) error { return json.Unmarshal(a.body, v) }

// code is the answer's stable error code ("" when it has none).
func (a apiAnswer) code() order.Code {
	var eb ErrorBody
	if a.ok() || json.Unmarshal(a.body, &eb) != nil {
		return ""
	}
	return eb.Error.Code
}

// problem is the answer's error message, for a page.
func (a apiAnswer) problem() string {
	var eb ErrorBody
	if json.Unmarshal(a.body, &eb) == nil && eb.Error.Message != "" {
		return eb.Error.Message
	}
	return http.StatusText(a.status)
}

// formKey is the idempotency key of a form shown again after a run from
// it went no further: the key the form was posted with when the API
// answered 5xx, whose run may have been recorded all the same (a commit
// whose answer a PostgreSQL restart lost), so that pressing Run again
// runs it at most once (the answer is then the recorded order); a new
// key after a refusal, which ran nothing.
func formKey(r *http.Request, status int) string {
	if status >= 500 && r.Method == http.MethodPost {
		if k := r.PostFormValue("idem"); k != "" && len(k) <= 64 {
			return k
		}
	}
	return randomToken()
}

// unknownOutcome is a 5xx answer's message to a run, with what it means
// for the person who sees the form again: Run again is safe.
func unknownOutcome(msg string) string {
	return strings.TrimSuffix(msg, ".") + ". Whether it was recorded is not known: running it again from this form runs it at most once (you are then shown the order if it was)."
}

// recorded is the order a 503 names as recorded though not yet queued
// (NATS unavailable: the intake's sweep queues it later), "" otherwise.
// The order exists and will run: a page that showed such an answer as a
// refusal, its form ready with a new idempotency key, had the person
// press Run again and run it twice.
func (a apiAnswer) recorded() string {
	return a.orderIn(http.StatusServiceUnavailable, "order_id")
}

// heldBy is the order a 429 of an action's concurrent_per_host names as
// holding the slot (details.held_by), "" otherwise.
func (a apiAnswer) heldBy() string {
	return a.orderIn(http.StatusTooManyRequests, "held_by")
}

// orderIn is the order id in the answer's details[key] when the answer
// has status, "" otherwise or when it is not an order id.
func (a apiAnswer) orderIn(status int, key string) string {
	var eb ErrorBody
	if a.status != status || json.Unmarshal(a.body, &eb) != nil {
		return ""
	}
	id, _ := eb.Error.Details[key].(string)
	if _, err := uuid.Parse(id); err != nil {
		return ""
	}
	return id
}

// reason is the answer's details.reason, when it is an error that has one.
func (a apiAnswer) reason() string {
	var eb ErrorBody
	if a.ok() || json.Unmarshal(a.body, &eb) != nil {
		return ""
	}
	r, _ := eb.Error.Details["reason"].(string)
	return r
}

// request builds the native API request for r's session: the browser's
// address and forwarding headers (for the ACL and the per-IP limit) and
// the session's credential.
func (u *webUI) request(r *http.Request, method, target string, body io.Reader, hdr ...string) *http.Request {
	// The request is routed afresh: chi would otherwise reuse the routing
	// state of the /ui/ request it came from.
	ctx := context.WithValue(r.Context(), chi.RouteCtxKey, (*chi.Context)(nil))
	ctx = context.WithValue(ctx, uiCallKey{}, true)
	req, _ := http.NewRequestWithContext(ctx, method, target, body)
	req.RemoteAddr, req.TLS = r.RemoteAddr, r.TLS
	if v := r.Header.Values("X-Forwarded-For"); len(v) > 0 {
		req.Header["X-Forwarded-For"] = v
	}
	req.Header.Set("Authorization", "Bearer "+sessionOf(r).token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

// uiCallKey marks a request the web UI sends to the native API. Only the
// server sets it: no client can.
type uiCallKey struct{}

// uiCall reports whether r is the web UI's call to the native API, which
// buffers the whole answer: its listings show no outputs, and get none.
func uiCall(r *http.Request) bool { return r.Context().Value(uiCallKey{}) != nil }

// call sends one request to the native API as r's session and returns the
// answer; body, when not nil, is sent as JSON.
func (u *webUI) call(r *http.Request, method, target string, body any, hdr ...string) apiAnswer {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiAnswer{status: http.StatusInternalServerError}
		}
		rd = bytes.NewReader(b)
	}
	rec := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
	u.native.ServeHTTP(rec, u.request(r, method, target, rd, hdr...))
	return apiAnswer{status: rec.status, body: rec.body.Bytes(), header: rec.header}
}

// bufferedResponse collects a native API answer in memory.
type bufferedResponse struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if !b.wrote {
		b.status, b.wrote = code, true
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.wrote = true
	return b.body.Write(p)
}
