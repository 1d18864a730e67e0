package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/orderly-run/orderly/internal/order"
)

// encode writes v as JSON with status. v is encoded before the status is
// sent: a value JSON cannot write (a time past year 9999) answers 500 with
// the error envelope, not status with an empty body.
func encode(w http.ResponseWriter, status int, v any) {
	buf := encodeBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 {
			encodeBufs.Put(buf)
		}
	}()
	buf.Reset()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		_ = enc.Encode(ErrorBody{Error: ErrorDetail{Code: order.CodeInternal, Message: "the answer could not be encoded: " + err.Error()}})
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// jsonContentType is a JSON answer's Content-Type, one value shared by
// every answer: Header.Set made a slice per answer (docs/benchmarks.md,
// "The sync order's wait side"). Its capacity is its length, so that an
// Add appends to a copy; nothing changes a header's values in place.
var jsonContentType = []string{"application/json"}[:1:1]

// encodeBufs are encode's buffers. One that grew past 1 MiB (a list of
// large orders) is not kept.
var encodeBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodeSubmitted answers a submission with its order: 200 once the order
// has ended (a wait saw it finish), 202 while it is queued or running;
// with its cancel request, as GET /v1/orders/{id} has it, and its
// correlation id in X-Correlation-Id (setCorrelation).
func (s *Server) encodeSubmitted(w http.ResponseWriter, r *http.Request, o *order.Order) {
	status := http.StatusAccepted
	if o.Status.Terminal() {
		status = http.StatusOK
	}
	setCorrelation(w.Header(), o)
	encode(w, status, s.withCancellation(r.Context(), o))
}

// decode reads a JSON body strictly: the right content type, within the
// size limit, then decodeBytes's rules.
func decode(r *http.Request, maxBytes int64, v any) error {
	if err := checkContentTypeOf(r); err != nil {
		return err
	}
	if err := checkContentEncoding(r.Header.Values("Content-Encoding")); err != nil {
		return err
	}
	body, err := readBody(r, maxBytes)
	if err != nil {
		return err
	}
	return decodeBytes(body, v)
}

// decodeOptional is decode for a body that may be left out: none, only
// white space, or JSON null (what a Go client sends for a nil map) leaves
// v as it is.
func decodeOptional(r *http.Request, maxBytes int64, v any) error {
	body, err := readBody(r, maxBytes)
	if trimmed := bytes.TrimSpace(body); err != nil || len(trimmed) == 0 || string(trimmed) == "null" {
		return err
	}
	if err := checkContentTypeOf(r); err != nil {
		return err
	}
	if err := checkContentEncoding(r.Header.Values("Content-Encoding")); err != nil {
		return err
	}
	return decodeBytes(body, v)
}

// checkContentEncoding refuses a compressed body (RFC 9110 §15.5.16: 415),
// which would otherwise be read as JSON and refused as "not valid UTF-8
// at offset 1".
func checkContentEncoding(ce []string) error {
	for _, v := range ce {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return &order.Error{Code: order.CodeUnsupportedType, Message: "Content-Encoding " + strconv.Quote(c) + " is not supported: send the JSON uncompressed",
					Details: map[string]any{"content_encoding": c}}
			}
		}
	}
	return nil
}

// readBody reads r's body, refusing one over maxBytes. A body whose
// Content-Length already says so is refused unread: with Expect:
// 100-continue the client is told before it sends any of it (net/http
// sends "100 Continue" only when the body is first read), and without it
// the answer does not wait for a mebibyte it will throw away.
func readBody(r *http.Request, maxBytes int64) ([]byte, error) {
	if r.ContentLength > maxBytes {
		return nil, bodyTooLarge(maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return nil, order.Errorf(order.CodeInvalid, "read body: %v", err)
	}
	if int64(len(body)) > maxBytes {
		return nil, bodyTooLarge(maxBytes)
	}
	return body, nil
}

// bodyTooLarge is the refusal of a body over maxBytes.
func bodyTooLarge(maxBytes int64) error {
	return &order.Error{Code: order.CodeTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", maxBytes),
		Details: map[string]any{"limit": maxBytes}}
}

// checkContentTypeOf is checkContentType for r's one Content-Type: two
// were read as the first, and a proxy that reads the last judged the
// body as another type.
func checkContentTypeOf(r *http.Request) error {
	ct, err := headerOnce(r, "Content-Type")
	if err != nil {
		return err
	}
	return checkContentType(ct)
}

// checkContentType accepts application/json (or merge-patch) in UTF-8:
// JSON exchanged between systems is UTF-8 (RFC 8259 §8.1), and a body
// declared as another charset would be read as something it is not.
func checkContentType(ct string) error {
	if ct == "application/json" {
		return nil // what nearly every client sends: no parameters to parse into a map
	}
	mt, params, err := mime.ParseMediaType(ct)
	isJSON := mt == "application/json" || mt == "application/merge-patch+json"
	switch {
	case ct == "":
		return order.Errorf(order.CodeUnsupportedType, "Content-Type must be application/json; the request sent none")
	case isJSON && err != nil:
		// ParseMediaType gives the type with ErrInvalidMediaParameter:
		// "must be application/json" read as if the type were wrong.
		return order.Errorf(order.CodeUnsupportedType, "Content-Type %.100q has parameters that cannot be read: send application/json, with at most charset=utf-8", ct)
	case err != nil || !isJSON:
		msg := fmt.Sprintf("Content-Type must be application/json, not %.100q", ct)
		if mt == "application/x-www-form-urlencoded" {
			// The newcomer's mistake: curl -d sends this unless told.
			msg += " (curl -d sends that unless given -H 'Content-Type: application/json')"
		}
		return order.Errorf(order.CodeUnsupportedType, "%s", msg)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &order.Error{Code: order.CodeUnsupportedType, Message: "Content-Type charset must be utf-8 (or absent)",
			Details: map[string]any{"charset": cs}}
	}
	return nil
}

// checkByteOrderMark refuses a body that starts with a byte order mark,
// naming it: JSON sent over a network has none (RFC 8259 §8.1), and
// without this a body saved by a Windows editor or PowerShell was
// refused as "invalid character 'ï'" or "not valid UTF-8 at offset 0",
// which told its sender nothing they could see in the file.
func checkByteOrderMark(body []byte) error {
	switch {
	case bytes.HasPrefix(body, []byte("\xef\xbb\xbf")):
		return order.Errorf(order.CodeInvalid, "invalid JSON: the body starts with a UTF-8 byte order mark (EF BB BF), which JSON sent over a network must not have: send the same text without it")
	case bytes.HasPrefix(body, []byte("\xff\xfe")), bytes.HasPrefix(body, []byte("\xfe\xff")):
		return order.Errorf(order.CodeInvalid, "invalid JSON: the body is UTF-16 (it starts with a byte order mark): send it as UTF-8")
	}
	return nil
}

// decodeBytes is decode's JSON half, shared with the NATS intake: valid
// UTF-8, case-sensitive field names, no unknown fields, no duplicate keys,
// no trailing data (checkJSON), then the typed decode.
func decodeBytes(body []byte, v any) error {
	if err := checkByteOrderMark(body); err != nil {
		return err
	}
	body, err := checkJSON(body, reflect.TypeOf(v))
	if err != nil {
		return err
	}
	// checkJSON has refused what a Decoder with DisallowUnknownFields and
	// a Token for trailing data would (unknown fields, trailing data,
	// invalid JSON): Unmarshal decodes without the Decoder's reader, its
	// copy of the body and the last Token (three allocations a request).
	if err := json.Unmarshal(body, v); err != nil {
		return order.Errorf(order.CodeInvalid, "invalid JSON: %s", jsonProblem(err))
	}
	return nil
}
