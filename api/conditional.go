package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"net/http"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// A client that polls a resource sends back the ETag it was given in
// If-None-Match and is answered 304 Not Modified, with no body, while the
// resource is unchanged (RFC 9110 §13.1.2): polling an order whose output
// is megabytes then costs neither side the output. The single-resource
// GETs answer an ETag: orders, batches, hosts, actions and runbooks.
//
// Every tag is strong: it is a digest of everything the answer's bytes
// are made of, so two answers with one tag are the same bytes. An order's
// is computed from what the one read of its row gave (orderETag), without
// reading its large outputs: those the read leaves in the database belong
// to a finished order, which never changes.

// notModified sets tag as w's ETag and answers 304 when r's If-None-Match
// is "*" or names tag; it reports whether it answered (a malformed
// If-None-Match is answered 400). The comparison is weak, as RFC 9110
// §13.1.2 has it for If-None-Match: W/"x" names "x". Called only once the
// resource is known to exist: a missing one is answered 404 whatever the
// condition.
func (s *Server) notModified(w http.ResponseWriter, r *http.Request, tag string) bool {
	m, err := conditionOf(r, "If-None-Match", "if_none_match_malformed", "as the GET answers it in ETag")
	if err != nil {
		s.writeError(w, r, err)
		return true
	}
	w.Header().Set("ETag", tag)
	if m == nil || !m.any && !m.namesWeakly(tag) {
		return false
	}
	w.WriteHeader(http.StatusNotModified)
	return true
}

// namesWeakly says whether m names tag when a W/ prefix is not compared.
func (m *ifMatch) namesWeakly(tag string) bool {
	tag = strings.TrimPrefix(tag, "W/")
	for _, t := range m.tags {
		if strings.TrimPrefix(t, "W/") == tag {
			return true
		}
	}
	return false
}

// encodeTagged is encode(w, 200, v) with v's ETag, a digest of the bytes
// written, and If-None-Match answered.
func (s *Server) encodeTagged(w http.ResponseWriter, r *http.Request, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		encode(w, http.StatusOK, v) // answers the encoding error as encode does
		return
	}
	sum := sha256.Sum256(buf.Bytes())
	if s.notModified(w, r, `"`+hex.EncodeToString(sum[:16])+`"`) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// orderETag is the entity tag of encodeOrder's answer for o, respOf(o),
// computed without building it: a digest of the answer with its kept
// outputs' contents left out, and of those contents that o holds. The
// contents a lean read left in the database (postgres.OutputsLeft) are
// not read: they belong to a finished order, whose outputs never change,
// and the answer's id, status and the outputs' sizes and SHA-256 already
// tell them apart. The answer is marshalled without the contents, a few
// microseconds (BenchmarkOrderETag), which a poll pays instead of the
// megabytes.
func orderETag(o *order.Order, respOf func(*order.Order) Order) string {
	h := sha256.New()
	writeOrderTag(h, o, respOf)
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// writeOrderTag writes to h what orderETag digests of o.
func writeOrderTag(h hash.Hash, o *order.Order, respOf func(*order.Order) Order) {
	bare := *o
	var contents [2][]byte
	if res := o.Result; res != nil {
		rb := *res
		contents = [2][]byte{rb.Stdout.Content, rb.Stderr.Content}
		rb.Stdout.Content, rb.Stderr.Content = nil, nil
		bare.Result = &rb
	}
	_ = json.NewEncoder(h).Encode(respOf(&bare)) // the API's own view: never fails
	for _, c := range contents {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(c)))
		h.Write(n[:])
		h.Write(c)
	}
}

// batchETag is the entity tag of GET /v1/batches/{id}'s answer for the
// batch's orders list, with or without their outputs (?outputs=none).
func batchETag(list []*order.Order, noOutputs bool) string {
	h := sha256.New()
	if noOutputs {
		h.Write([]byte("outputs=none\n"))
	}
	for _, o := range list {
		writeOrderTag(h, o, toResponse)
	}
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}
