package api

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/orderly-run/orderly/internal/order"
)

// queryOf parses r's query string strictly, for the handlers that read
// it. A string net/url cannot parse (a bad %-escape, a ';') is 400:
// r.URL.Query() drops such a pair without a word, so
// ?principal=bob%zz listed every principal's orders. A parameter given
// more than once is 400 unless it is one of multi: r.URL.Query().Get
// took the first, so ?host=a&host=b listed a's orders as if that were
// the answer, and a proxy or WAF in front that read the last value was
// checking another request than the one served.
func queryOf(r *http.Request, multi ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, order.FieldError(order.CodeInvalid, "query", "the query string is not valid: %v", err)
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names) // the first repeated name in order: one answer for one request
	for _, name := range names {
		if n := len(q[name]); n > 1 && !slices.Contains(multi, name) {
			return nil, order.FieldError(order.CodeInvalid, name, "the query parameter %q is given %d times: give it once", name, n)
		}
	}
	return q, nil
}
