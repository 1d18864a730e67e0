package api

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

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
		p, err := s.Auth().Authenticate(h)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderly", error="invalid_token"`)
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// audit records a refused request. The request is redacted: method, path
// and query only — never headers (tokens) or the body (env values).
func (s *Server) audit(r *http.Request, status int, e *order.Error) {
	rej := postgres.Rejection{
		Principal: principalOf(r).Name, ClientIP: clientIPOf(r), Source: "rest",
		Method: r.Method, Path: r.URL.Path, Status: status, Code: string(e.Code), Reason: e.Message,
		Request: map[string]any{"query": r.URL.RawQuery},
	}
	if rr, ok := r.Context().Value(redactedKey{}).(map[string]any); ok {
		rej.Request = rr
	}
	s.Intake.Reject(r.Context(), storable(rej))
}

// Audit rows identify a refused request; they need not keep all of it. A
// refusal for size would otherwise store up to a whole body per row.
const (
	auditMaxString = 1024
	auditMaxList   = 64
)

// storable makes a rejection insertable and bounded: PostgreSQL text and
// jsonb refuse NUL and invalid UTF-8, and a request refused for carrying
// them must not escape the audit by failing the insert, so such bytes
// become U+FFFD; long strings and lists are cut, saying how long they were.
func storable(rej postgres.Rejection) postgres.Rejection {
	rej.Principal, rej.ClientIP = storableString(rej.Principal), storableString(rej.ClientIP)
	rej.Method, rej.Path, rej.Reason = storableString(rej.Method), storableString(rej.Path), storableString(rej.Reason)
	if rej.Request != nil {
		rej.Request, _ = storableValue(rej.Request).(map[string]any)
	}
	return rej
}

func storableString(s string) string {
	if len(s) > auditMaxString {
		s = s[:auditMaxString] + "…(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// cut keeps the first auditMaxList elements of a list, and says so.
func cut[T any](list []T, more func(n int) T) []T {
	if len(list) <= auditMaxList {
		return list
	}
	return append(list[:auditMaxList:auditMaxList], more(len(list)))
}

func storableValue(v any) any {
	switch x := v.(type) {
	case string:
		return storableString(x)
	case []string:
		x = cut(x, func(n int) string { return "…(" + strconv.Itoa(n) + " elements)" })
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = storableString(s)
		}
		return out
	case []any:
		x = cut(x, func(n int) any { return "…(" + strconv.Itoa(n) + " elements)" })
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = storableValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[storableString(k)] = storableValue(e)
		}
		return out
	}
	return v
}

// redactedKey carries a redacted copy of the submitted order for the audit.
type redactedKey struct{}
