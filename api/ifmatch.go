package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// A REST client binds a run to the definition it reviewed the HTTP way:
// GET /v1/actions/{name} and GET /v1/runbooks/{name} answer an ETag, and
// a run sent with If-Match runs only while the definition still has one
// of the tags named (RFC 9110 §13.1.1), else 412 precondition_failed and
// nothing runs. The web UI's forms do the same with their own field
// (ui_formbind.go). The tag is a digest of the whole representation the
// GET answers, so it is a strong validator: it changes whenever what the
// client read changes (an action's hosts and run limit too, which the
// UI's narrower digest leaves out).

// etagOf is the strong entity tag of representation v: a digest of its
// JSON, quoted.
func etagOf(v any) string {
	b, _ := json.Marshal(v) // the API's own views: never fails
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

// ifMatch is a request's If-Match: nil when it sent none.
type ifMatch struct {
	any  bool     // "*": any current representation
	tags []string // the entity tags, quoted, weak ones with their W/
}

// ifMatchOf parses r's If-Match fields (RFC 9110 §13.1.1: "*" or a list
// of entity tags; several fields are one list). A field that is neither
// is refused with 400: a client that meant a condition must not have its
// run go ahead unconditioned.
func ifMatchOf(r *http.Request) (*ifMatch, error) {
	return conditionOf(r, "If-Match", "if_match_malformed", "as the definition's GET answers it in ETag")
}

// conditionOf parses r's fields named field as If-Match and If-None-Match
// are written: "*" alone or a list of entity tags. A malformed one is
// refused with 400, details.reason reason; hint says where the tags come
// from.
func conditionOf(r *http.Request, field, reason, hint string) (*ifMatch, error) {
	fields := r.Header.Values(field)
	if len(fields) == 0 {
		return nil, nil
	}
	bad := func(msg string) error {
		return &order.Error{Code: order.CodeInvalid, Message: msg,
			Details: map[string]any{"field": field, "reason": reason}}
	}
	m := &ifMatch{}
	for _, f := range fields {
		for _, el := range strings.Split(f, ",") {
			el = strings.Trim(el, " \t")
			switch {
			case el == "":
				// Empty list elements are allowed and ignored (RFC 9110 §5.6.1).
			case el == "*":
				m.any = true
			case validETag(el):
				m.tags = append(m.tags, el)
			default:
				return nil, bad(field + " must be * or a list of entity tags such as \"0123abcd\" (" + hint + "); got " + printableName(el))
			}
		}
	}
	if m.any && len(m.tags) > 0 {
		return nil, bad(field + " * stands alone; it cannot be listed with entity tags")
	}
	if !m.any && len(m.tags) == 0 {
		return nil, bad(field + " names no entity tag")
	}
	return m, nil
}

// validETag says whether s is an entity-tag: an optional W/, then
// DQUOTE *etagc DQUOTE, etagc being %x21 / %x23-7E / obs-text.
func validETag(s string) bool {
	s = strings.TrimPrefix(s, "W/")
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; c < 0x21 || c == '"' || c == 0x7f {
			return false
		}
	}
	return true
}

// check refuses a run whose If-Match names none of current, the target's
// entity tag: 412, details.reason changed (what = "action" or "runbook",
// name its name). The comparison is strong, so a weak tag never matches.
func (m *ifMatch) check(current, what, name string) error {
	if m == nil || m.any {
		return nil
	}
	weak := true
	for _, t := range m.tags {
		if t == current {
			return nil
		}
		weak = weak && strings.HasPrefix(t, "W/")
	}
	msg := what + " " + name + " is no longer the definition If-Match names (nothing was run): GET it again, review it and send its ETag"
	if weak {
		msg = "If-Match compares entity tags strongly (RFC 9110 §13.1.1): a weak tag (W/…) never matches (nothing was run); send the ETag as GET " + what + " " + name + " answers it"
	}
	return &order.Error{Code: order.CodePreconditionFailed, Message: msg,
		Details: map[string]any{"reason": what + "_changed", what: name, "field": "If-Match"}}
}
