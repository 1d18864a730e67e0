package api

import (
	"context"
	"net"
	"net/http"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// network resolves the client IP (trusting X-Forwarded-For only from
// configured proxies) and applies the CIDR lists before anything else, so
// a denied client never reaches authentication.
func (s *Server) network(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acl := s.Settings().ACL
		ip := r.RemoteAddr
		if acl != nil {
			addr, err := acl.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
			if err != nil {
				s.writeError(w, r, order.Errorf(order.CodeForbidden, "client address not recognized"))
				return
			}
			ip = addr.String()
			r = r.WithContext(context.WithValue(r.Context(), clientIPKey{}, ip))
			if ok, reason := acl.Allowed(addr); !ok {
				e := order.Errorf(order.CodeForbidden, "client address %s is not allowed", ip)
				e.Details = map[string]any{"reason": reason}
				s.writeError(w, r, e)
				return
			}
		} else {
			// Without an ACL the client is the socket peer; drop the port
			// so the audit and the per-IP rate limit see one address.
			if host, _, err := net.SplitHostPort(ip); err == nil {
				ip = host
			}
			r = r.WithContext(context.WithValue(r.Context(), clientIPKey{}, ip))
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate requires a valid bearer token or JWT on every /v1 route.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		if h == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderly"`)
			s.writeError(w, r, order.Errorf(order.CodeUnauthenticated, "missing Authorization: Bearer <token>"))
			return
		}
		if err := oneAuthorization(r.Header.Values("Authorization")); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderly", error="invalid_request"`)
			s.writeError(w, r, err)
			return
		}
		p, err := s.Auth().Authenticate(h)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderly", error="invalid_token"`)
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, authedPrincipal{p, h})))
	})
}

// oneAuthorization refuses a request that carries more than one
// Authorization header (RFC 9110 allows one): which one a proxy chain or
// another server would read is anyone's guess, so none is.
func oneAuthorization(values []string) error {
	if len(values) > 1 {
		return order.Errorf(order.CodeUnauthenticated, "%d Authorization headers: send one", len(values))
	}
	return nil
}

// audit records a refused request. The request is redacted: method, path
// and query only (credentials in the query redacted: auditQuery) — never
// headers (tokens) or the body (env values). redacted, when not nil, is
// the request's redacted body, which the audit records instead.
func (s *Server) audit(r *http.Request, status int, e *order.Error, redacted func() map[string]any) {
	if !s.recordRefusal(clientIPOf(r), principalOf(r).Name) {
		s.Intake.Unrecorded(string(e.Code))
		return
	}
	rej := postgres.Rejection{
		Principal: principalOf(r).Name, ClientIP: clientIPOf(r), Source: "rest",
		Method: r.Method, Path: r.URL.Path, Status: status, Code: string(e.Code), Reason: e.Message,
		Request: map[string]any{"query": auditQuery(r.URL.RawQuery)},
	}
	if redacted != nil {
		rej.Request = redacted()
	} else if rr, ok := r.Context().Value(redactedKey{}).(map[string]any); ok {
		rej.Request = rr
	}
	s.Intake.Reject(r.Context(), rej)
}

// redactedKey carries a redacted copy of the submitted order for the audit.
type redactedKey struct{}

// apiHeaders marks every answer of the API's routes and of the compat
// surfaces Cache-Control: no-store and X-Content-Type-Options: nosniff,
// 401s and 429s included. An answer holds orders' arguments and outputs,
// which may be secrets: a browser that calls the API (a page's fetch with
// a bearer token) kept an answer in its disk cache, where it outlived the
// token and the session. Output is sent as written (encode does no HTML
// escaping), so a browser must never sniff an answer into a page. A
// stream sets its own Cache-Control over this one; a client that polls
// with If-None-Match keeps its own copy and still gets its 304
// (conditional.go). The web UI (uiHeaders) and the explorer (docs.go)
// set their own.
func apiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Cache-Control"] = noStore
		h["X-Content-Type-Options"] = nosniff
		next.ServeHTTP(w, r)
	})
}

// The values apiHeaders sets, shared by every answer as jsonContentType
// is: no slice per answer.
var (
	noStore = []string{"no-store"}[:1:1]
	nosniff = []string{"nosniff"}[:1:1]
)
