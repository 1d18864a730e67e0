// Package compat holds orderly's drop-in surfaces for the clients of the
// tools it replaces: httpexec (POST /<command>) and the Vigrid Shell API
// (/api/v1/...). Each surface only translates: a request becomes an
// ordinary order through the API's one intake path (Orders.SubmitOrder:
// validate, authorize, record in PostgreSQL, publish), the host's worker runs
// it, and the answer is rebuilt from the order PostgreSQL holds. The wire
// formats are those of docs/compat.md.
package compat

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
)

// Orders is what a surface needs of the API (*api.Server).
type Orders interface {
	SubmitOrder(ctx context.Context, p auth.Principal, o *order.Order, wait time.Duration) (*order.Order, error)
	CancelOrder(ctx context.Context, o *order.Order, actor, signal string) (order.Status, error)
	// BindWaiter makes this API process o's waiter: o is canceled at its
	// claim, never run, once the process is gone (killed, crashed), as
	// the originals never ran a request's command after they died.
	BindWaiter(o *order.Order)
	// CancelQueued cancels o as actor when it is still queued; one that
	// has started runs on (a synchronous request whose client went away).
	CancelQueued(ctx context.Context, o *order.Order, actor, reason string)
	HostQueue(ctx context.Context, p auth.Principal, host string) (running *order.Order, queued []*order.Order, depth int, err error)
	// HostOnline reports whether host's worker is alive (its heartbeat
	// fresh), as a native cancel's answer says it; known is false when
	// that cannot be told now.
	HostOnline(ctx context.Context, host string) (online, known bool)
	AuditRefusal(ctx context.Context, r *http.Request, principal, clientIP, source string, status int, err error)
	// RejectOrder is AuditRefusal for a command a surface refused at its
	// own checks (its original's order: forbidden characters, the
	// policy, the command's resolution, the user) before intake saw it,
	// and logs it "order rejected" on host, as intake logs the commands
	// it refuses: the log holds every refused command, whichever door
	// it came in by.
	RejectOrder(ctx context.Context, r *http.Request, principal, clientIP, source, host string, status int, err error)
	// LimitPrincipal spends one of principal's limits.rate_per_principal,
	// the allowance its REST requests and NATS submissions spend too; past
	// it, it audits the refusal, sets Retry-After on w and returns the
	// refusal, which the surface answers 429 in its original's format (as
	// limits.rate_per_ip is answered, through its Refuse).
	LimitPrincipal(w http.ResponseWriter, r *http.Request, principal, clientIP, source string) error
}

// Authenticator turns an Authorization header into a principal.
type Authenticator interface {
	Authenticate(header string) (auth.Principal, error)
}

// Deps are a surface's collaborators. The functions are called per
// request, so a config reload applies at once.
type Deps struct {
	Orders Orders
	Config func() config.Config
	ACL    func() *netacl.ACL
	Auth   func() Authenticator
	// Authorize asks the API policy about a command line before anything
	// else is checked, for Vigrid's check order (intake asks again).
	Authorize func(p auth.Principal, host, command string, args []string, runAs string, dryRun bool) (order.Decision, error)
	// Drift reports whether the config file differs from the loaded one,
	// checked when called (Vigrid's integrity check, on every request).
	Drift func() bool
	// Reload loads the config file again; by is who asked, for the log.
	Reload func(ctx context.Context, by string) error
}

// clientAddr is the client's address by the ACL's rules (X-Forwarded-For
// only from trusted proxies) and whether the ACL admits it.
func clientAddr(acl *netacl.ACL, r *http.Request) (string, bool) {
	if acl == nil {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr, true
		}
		return ap.Addr().String(), true
	}
	addr, err := acl.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
	if err != nil {
		return "", false
	}
	ok, _ := acl.Allowed(addr)
	return addr.String(), ok
}

// auditACL records a request the network ACL refused, as the native API
// records its own: ip is "" when the client address could not be told.
func auditACL(o Orders, r *http.Request, ip, source string) {
	msg := "client address not recognized"
	if ip != "" {
		msg = "client address " + ip + " is not allowed"
	}
	o.AuditRefusal(r.Context(), r, "", ip, source, http.StatusForbidden, order.Errorf(order.CodeForbidden, "%s", msg))
}

// retryAfter sets the Retry-After of a refusal that says when to come
// back (details.retry_after_seconds: limits.max_streams_per_principal's
// 429 for a waiting execute), as the native API's answer has it.
func retryAfter(w http.ResponseWriter, err error) {
	var e *order.Error
	if errors.As(err, &e) {
		if secs, ok := e.Details["retry_after_seconds"].(int64); ok {
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
	}
}

// returnCode is the exit status as Python's subprocess reports it: the
// exit code, or minus the number of the signal that ended the process.
func returnCode(res *order.Result) (int, bool) {
	if res == nil {
		return 0, false
	}
	if res.ExitCode != nil {
		return *res.ExitCode, true
	}
	if n := unix.SignalNum(res.Signal); n != 0 {
		return -int(n), true
	}
	return 0, false
}

// hostRefusal reads an order its host's worker refused (status
// rejected: its host policy said no to what the API allowed): the error
// its reason carries (the code its text starts with, order.CodeOfText;
// forbidden for a text without one, as a rejection is the host's policy
// refusing) and that code's status under the API's one map, a 4xx for
// every code a host policy gives. ok is false for any other order.
func hostRefusal(o *order.Order) (e *order.Error, status int, ok bool) {
	if o == nil || o.Status != order.StatusRejected {
		return nil, 0, false
	}
	text := "the host refused the order"
	if o.Result != nil && o.Result.Error != "" {
		text = o.Result.Error
	}
	code, known := order.CodeOfText(text)
	msg := text
	if known && !strings.HasPrefix(text, order.NewerAPIRefusal) {
		msg = strings.TrimPrefix(text, string(code)+": ")
	}
	if !known {
		code = order.CodeForbidden
	}
	e = &order.Error{Code: code, Message: msg}
	return e, api.HTTPStatus(e), true
}

// flaskAllow is the Allow header of a Flask route served by method (the
// 405's and OPTIONS's): Flask answered OPTIONS on every route, and HEAD
// on every GET route. Werkzeug listed them in no fixed order (a Python
// set's); sorted here.
func flaskAllow(method string) string {
	if method == http.MethodGet {
		return "GET, HEAD, OPTIONS"
	}
	if method < http.MethodOptions {
		return method + ", OPTIONS"
	}
	return "OPTIONS, " + method
}

// flaskOptions is Flask's automatic answer to OPTIONS on a route served
// by method: 200, its methods in Allow, no body. Flask gave it in place
// of the view, so after its before_request hooks only (Vigrid's checks
// ran there; stage0's ran in the views).
func flaskOptions(w http.ResponseWriter, method string) {
	w.Header().Set("Allow", flaskAllow(method))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// unqueued is the order err says the intake recorded but could not queue
// (the bus failed after the insert): the reconciler queues such an order
// later, so it runs unless it is withdrawn.
func unqueued(err error) (*intake.ErrNotPublished, bool) {
	var np *intake.ErrNotPublished
	return np, errors.As(err, &np)
}

// withdraw cancels np's recorded order, of a request answered as failed,
// so that it never runs later (a client told it failed may send it
// again). The cancel is on record before the answer, and made whether or
// not the client is still there to hear it.
func withdraw(ctx context.Context, orders Orders, np *intake.ErrNotPublished, p auth.Principal) error {
	_, err := orders.CancelOrder(context.WithoutCancel(ctx), &order.Order{ID: np.ID, Host: np.Host, Principal: p.Name}, p.Name, "SIGKILL")
	return err
}

// crossOrigin is an error for a browser's request from another origin
// (Sec-Fetch-Site, else Origin against Host; net/http's
// CrossOriginProtection, whose zero value trusts no other origin); a
// script's request, which carries neither header, passes.
func crossOrigin(r *http.Request) error {
	var c http.CrossOriginProtection
	return c.Check(r)
}

// byName is an error for a browser's request that names this server by
// a DNS name other than localhost. Such a request can be a page's own,
// same-origin to the browser, after the page's name was rebound in DNS
// to this server's address (DNS rebinding): the browser sends it from
// inside acl.allow, Sec-Fetch-Site and Origin say same-origin, and the
// page reads the answer. A name the server answers to cannot be told
// from the attacker's, so the surfaces that need no credential take a
// browser's request only under an IP address or localhost, which no
// other site's page can have for its origin. A script sends neither
// Sec-Fetch-Site nor Origin and is not affected, by any name.
func byName(r *http.Request) error {
	if r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Sec-Fetch-Mode") == "" && r.Header.Get("Origin") == "" {
		return nil
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if _, err := netip.ParseAddr(host); err == nil || host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return nil
	}
	return fmt.Errorf("a browser's request for the name %q (only an IP address or localhost: a page whose name was rebound to this server is same-origin to the browser)", r.Host)
}

// flaskMethodOK reports whether a Flask route served by method takes a
// request's: its own, OPTIONS, and HEAD for GET.
func flaskMethodOK(got, method string) bool {
	return got == method || got == http.MethodOptions || got == http.MethodHead && method == http.MethodGet
}

// werkzeugRedirect answers a path with doubled slashes that matched a
// route once merged as Werkzeug did (RequestRedirect): 308 to path (the
// merged one, unescaped) on the request's scheme and host, the query kept
// as sent, and Werkzeug's short HTML page. A 308 keeps the method and
// the body, so a client that follows it sends the same request again.
func werkzeugRedirect(w http.ResponseWriter, r *http.Request, path string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := werkzeugQuote(path)
	if r.Host != "" { // an HTTP/1.0 request may name none: then a path alone
		u = scheme + "://" + strings.ToLower(r.Host) + u
	}
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", u)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusPermanentRedirect)
	esc := html.EscapeString(u)
	_, _ = io.WriteString(w, "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n<h1>Redirecting...</h1>\n"+
		"<p>You should be redirected automatically to the target URL: <a href=\""+esc+"\">"+esc+"</a>. If not, click the link.\n")
}

// werkzeugQuote is Python's urllib.parse.quote(path, safe="!$&'()*+,/:;=@"),
// with which Werkzeug wrote a redirect's path: every other byte but
// letters, digits and _.-~ percent-encoded.
func werkzeugQuote(path string) string {
	const safe = "!$&'()*+,/:;=@_.-~"
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(safe, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// queuedCanceler cancels an order still queued (Orders, stage0's Runbooks).
type queuedCanceler interface {
	CancelQueued(ctx context.Context, o *order.Order, actor, reason string)
}

// abandonWait ends the wait of a client that never learns o's id once
// the request's context ended: its client went away (a proxy cut it) or
// the API is stopping. o, if still queued, is canceled as actor for
// reason: it would run later for nobody, and again when the client sends
// the request once more; one that started runs on, as the originals'
// commands did. The connection is then cut, as a killed API cuts it: a
// handler that returned without an answer was a `200 OK` with no body
// (a stage0 stream: the run's whole output without its done) to the
// client of a stopping API.
func abandonWait(ctx context.Context, c queuedCanceler, o *order.Order, actor, reason string) {
	c.CancelQueued(context.WithoutCancel(ctx), o, actor, reason)
	panic(http.ErrAbortHandler)
}
