package api

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// queryOf parses r's query string strictly, for the handlers that read
// it; known are the parameters the operation takes (openapi.yaml lists
// the same), repeat those of them that may be given more than once.
//
// A string net/url cannot parse (a bad %-escape, a ';') is 400:
// r.URL.Query() drops such a pair without a word, so ?principal=bob%zz
// listed every principal's orders. A parameter given twice is 400 (unless
// it may repeat): Get took the first, so ?host=a&host=b listed a's orders
// as if that were the answer, and a proxy that read the last value judged
// another request than the one served. A parameter the operation does not
// take is 400, as an unknown field of a body is: ?stauts=failed listed
// every order, and POST /v1/orders?dry_run=true ran the command.
func queryOf(r *http.Request, known []string, repeat ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, order.FieldError(order.CodeInvalid, "query", "the query string is not valid: %v", err)
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names) // one answer for one request, whatever the map's order
	for _, name := range names {
		if !slices.Contains(known, name) {
			takes := "no query parameters"
			if len(known) > 0 {
				takes = strings.Join(known, ", ")
			}
			shown := shownParam(name)
			return nil, order.FieldError(order.CodeInvalid, shown, "unknown query parameter %q (this operation takes %s)", shown, takes)
		}
		if n := len(q[name]); n > 1 && !slices.Contains(repeat, name) {
			return nil, order.FieldError(order.CodeInvalid, name, "the query parameter %q is given %d times: give it once", name, n)
		}
	}
	return q, nil
}

// shownParam is an unknown parameter's name as a refusal names it: one
// shaped like a credential (a token sent as ?ord_… without a name) is
// not repeated, since the refusal's message is the audit's reason, which
// never keeps a credential (auditQuery).
func shownParam(name string) string {
	if credentialShaped(url.QueryEscape(name)) {
		return redacted
	}
	return name
}

// noQuery is for a /v1 operation that takes no query parameters: it
// refuses any, as queryOf refuses one an operation does not take. Such
// operations ignored their query string, so ?outputs=none on GET
// /v1/orders/{id} or ?dry_run=true on a cancel was dropped without a
// word. (The probes, the metrics and the documents, outside /v1, still
// ignore theirs: load balancers, scrapers and browsers add their own.)
func (s *Server) noQuery(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := queryOf(r, nil); err != nil {
			s.writeError(w, r, err)
			return
		}
		h(w, r)
	}
}

// headerOnce reads a request header that a native operation takes once.
// Given twice it is 400, as a repeated query parameter is (queryOf) and
// as Idempotency-Key is (idempotencyKeyOf): Get took the first, and a
// proxy that reads the last judged another request than the one served.
func headerOnce(r *http.Request, name string) (string, error) {
	vs := r.Header.Values(name)
	if len(vs) > 1 {
		return "", order.FieldError(order.CodeInvalid, name, "%d %s headers: send one", len(vs), name)
	}
	if len(vs) == 0 {
		return "", nil
	}
	return vs[0], nil
}
