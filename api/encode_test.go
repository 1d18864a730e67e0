package api

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// TestDecodeStrict: what encoding/json alone would accept or rewrite is
// refused with 400 (invalid_request), on the one decoder REST and NATS share.
func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"case variant of a field", `{"command":"showargs","Command":"mark"}`, `unknown field "Command"`},
		{"case variant alone", `{"host":"h","COMMAND":"mark"}`, `unknown field "COMMAND"`},
		{"args twice, once upper case", `{"command":"x","args":["a"],"ARGS":["b"]}`, `unknown field "ARGS"`},
		{"nested case variant", `{"command":"x","stdout":{"Capture":false}}`, `unknown field "Capture"`},
		{"stdin object case variant", `{"command":"x","stdin":{"Content":"y"}}`, `unknown field "Content"`},
		{"exact duplicate", `{"command":"a","command":"b"}`, `duplicate key "command"`},
		{"duplicate env name", `{"command":"a","env":{"A":"1","A":"2"}}`, `duplicate key "A"`},
		{"unknown field", `{"command":"a","bogus":1}`, `unknown field "bogus"`},
		// A guess at a field's name is told the names the object takes.
		{"a guessed field", `{"command":"a","timeout":"10s"}`, `unknown field "timeout" (the body takes args, command, `},
		{"a guessed field lists the one meant", `{"command":"a","timeout":"10s"}`, `, timeout_seconds`},
		{"a guessed nested field", `{"command":"a","stdout":{"capture":true,"encoding":"base64"}}`, `unknown field "encoding" (stdout takes capture, encode)`},
		{"trailing data", `{"command":"a"} {}`, `trailing data`},
		{"invalid UTF-8 in command", "{\"command\":\"ec\xffho\"}", `not valid UTF-8 at offset 14`},
		{"invalid UTF-8 in args", "{\"command\":\"echo\",\"args\":[\"\xc3\"]}", `not valid UTF-8`},
		{"lone high surrogate", `{"command":"echo","args":["\ud800"]}`, `half a surrogate pair`},
		{"lone low surrogate", `{"command":"\udc00"}`, `half a surrogate pair`},
		{"high surrogate then letter", `{"command":"\ud800\u0041"}`, `half a surrogate pair`},
		{"null argument", `{"command":"echo","args":["a",null]}`, `args[] must be a string, not null`},
		{"null env value", `{"command":"env","env":{"X":null}}`, `env.X must be a string, not null`},
		{"deep nesting", `{"env":` + strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40) + `}`, `nested deeper`},
		// A file saved by a Windows editor or PowerShell: the refusal
		// names what the sender cannot see ("invalid character 'ï'").
		{"UTF-8 byte order mark", "\xef\xbb\xbf{\"command\":\"a\"}", `starts with a UTF-8 byte order mark (EF BB BF)`},
		{"UTF-16LE with its mark", "\xff\xfe{\x00}\x00", `the body is UTF-16`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req SubmitRequest
			err := decodeBytes([]byte(tc.body), &req)
			if order.ErrorCode(err) != order.CodeInvalid || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decode %s: %v (command %q), want invalid_request with %q", tc.body, err, req.Command, tc.want)
			}
		})
	}
}

// TestDecodeStrictAccepts: valid input still decodes; env names that differ
// only in case are distinct variables, and escapes stay what they mean.
func TestDecodeStrictAccepts(t *testing.T) {
	var req SubmitRequest
	body := `{"command":"echo","deliver_by":"2026-12-03T10:00:00.5+02:00","args":["\ud83d\ude00","a\\ud800","é"],"env":{"FOO":"1","foo":"2"},"stdin":"x","stdout":{"capture":true},"run_as":null,"timeout_seconds":null}`
	if err := decodeBytes([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	if req.DeliverBy == nil || !req.DeliverBy.Equal(time.Date(2026, 12, 3, 8, 0, 0, 5e8, time.UTC)) || req.Args[0] != "😀" || req.Args[1] != `a\ud800` || req.Args[2] != "é" || req.Env["FOO"] != "1" || req.Env["foo"] != "2" || req.Stdin.Content != "x" {
		t.Fatalf("decoded %+v", req)
	}
}

// TestContentTypeRefusalSaysWhatWasSent: a refused Content-Type is named
// in the refusal. Every one was told "Content-Type must be application/json",
// which read as a contradiction for application/json with a malformed
// parameter, and told a newcomer whose curl -d sent a form nothing of
// what was sent.
func TestContentTypeRefusalSaysWhatWasSent(t *testing.T) {
	for ct, want := range map[string]string{
		"":                                  "Content-Type must be application/json; the request sent none",
		"text/plain":                        `Content-Type must be application/json, not "text/plain"`,
		"application/x-www-form-urlencoded": `Content-Type must be application/json, not "application/x-www-form-urlencoded" (curl -d sends that unless given -H 'Content-Type: application/json')`,
		"application/json;;":                `Content-Type "application/json;;" has parameters that cannot be read: send application/json, with at most charset=utf-8`,
		"json":                              `Content-Type must be application/json, not "json"`,
	} {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(`{}`))
		r.Header.Set("Content-Type", ct)
		var v struct{}
		err := decode(r, 1<<10, &v)
		if order.ErrorCode(err) != order.CodeUnsupportedType || err.(*order.Error).Message != want {
			t.Errorf("Content-Type %q: %v, want %q", ct, err, want)
		}
	}
}

// TestContentTypeCharset: only UTF-8 (or no charset) is JSON here.
func TestContentTypeCharset(t *testing.T) {
	for ct, ok := range map[string]bool{
		"application/json":                  true,
		"application/json; charset=utf-8":   true,
		"application/json; charset=UTF-8":   true,
		"application/json; charset=utf-16":  false,
		"application/json; charset=latin1":  false,
		"text/plain":                        false,
		"":                                  false,
		"application/json; charset=\"utf-8": false,
	} {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(`{}`))
		r.Header.Set("Content-Type", ct)
		var v struct{}
		err := decode(r, 1<<10, &v)
		if ok != (err == nil) || (err != nil && order.ErrorCode(err) != order.CodeUnsupportedType) {
			t.Errorf("Content-Type %q: %v", ct, err)
		}
	}
}

// TestContentEncoding: a compressed body is refused as a content type
// orderly does not read (415), not read as JSON that is not UTF-8.
func TestContentEncoding(t *testing.T) {
	for ce, ok := range map[string]bool{"": true, "identity": true, "gzip": false, "identity, br": false} {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(`{}`))
		r.Header.Set("Content-Type", "application/json")
		if ce != "" {
			r.Header.Set("Content-Encoding", ce)
		}
		var v struct{}
		err := decode(r, 1<<10, &v)
		if ok != (err == nil) || (err != nil && order.ErrorCode(err) != order.CodeUnsupportedType) {
			t.Errorf("Content-Encoding %q: %v", ce, err)
		}
	}
}

// TestDecodeTypeErrorsSpeakJSON: a value of the wrong type is named in
// JSON's words, never Go's type names.
func TestDecodeTypeErrorsSpeakJSON(t *testing.T) {
	for body, want := range map[string]string{
		`[]`:                      "the body must be an object, not array",
		`null`:                    "the body must be an object, not null",
		` null `:                  "the body must be an object, not null",
		`{"command":1}`:           `field "command" must be a string, not number`,
		`{"args":"a"}`:            `field "args" must be a list, not string`,
		`{"env":[]}`:              `field "env" must be an object, not array`,
		`{"timeout_seconds":"5"}`: `field "timeout_seconds" must be a number, not string`,
		// An element of the wrong type is named as one: "field "args"
		// must be a string" read as if args were not to be a list.
		`{"args":["a",2]}`:       `args[] must be a string, not number`,
		`{"args":[true]}`:        `args[] must be a string, not bool`,
		`{"env":{"A":1}}`:        `env.A must be a string, not number`,
		`{"args":[1e400]}`:       `args[] must be a string, not number`,
		`{"env":{"A":1e400}}`:    `env.A must be a string, not number`,
		`{"hosts":["web-1",{}]}`: `hosts[] must be a string, not object`,
		`{"args":[["a"]]}`:       `args[] must be a string, not array`,
		// Numbers that do not fit name their field, not "the body".
		`{"timeout_seconds":1` + strings.Repeat("0", 5000) + `}`: `field "timeout_seconds" is out of range: 1` + strings.Repeat("0", 63) + `…`,
		`{"timeout_seconds":1e400}`:                              `field "timeout_seconds" is out of range: 1e400`,
		`{"max_output_bytes":1.5}`:                               `field "max_output_bytes" must be a whole number, not 1.5`,
		`{"max_output_bytes":99999999999999999999}`:              `field "max_output_bytes" is out of range: 99999999999999999999`,
		`{"max_output_bytes":"5"}`:                               `field "max_output_bytes" must be a whole number, not string`,
		// A time names its field and its form, never Go's layout.
		`{"deliver_by":5}`:                     `field "deliver_by" must be an RFC 3339 time such as 2025-01-31T15:04:05Z, not a number`,
		`{"deliver_by":"2026-12-03"}`:          `field "deliver_by" must be an RFC 3339 time such as 2025-01-31T15:04:05Z, not "2026-12-03"`,
		`{"deliver_by":"2026-12-03T10:00:00"}`: `field "deliver_by" must be an RFC 3339 time`,
		`{"deliver_by":""}`:                    `field "deliver_by" must be an RFC 3339 time`,
	} {
		var req SubmitRequest
		err := decodeBytes([]byte(body), &req)
		if order.ErrorCode(err) != order.CodeInvalid || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "api.") ||
			strings.Contains(err.Error(), "2006") || strings.Contains(err.Error(), "UnmarshalJSON") {
			t.Errorf("decode %s: %v, want invalid_request with %q", body, err, want)
		}
	}
}

// TestDecodeNumbersAsTheSpecReadsThem: openapi.yaml is OpenAPI 3.1, whose
// `type: integer` is any number with no fraction, so 1.0 and 1e3 are
// whole numbers there; they were refused ("must be a whole number
// written in digits"). A fraction is still refused, and so is a number
// that is not 0 but reads as 0 (1e-400 for timeout_seconds was "none
// given": the default timeout). Strings that look like numbers are left
// as they are.
func TestDecodeNumbersAsTheSpecReadsThem(t *testing.T) {
	for body, want := range map[string]int64{
		`{"max_output_bytes":1` + strings.Repeat("0", 1500) + `e-1500}`:    1,
		`{"max_output_bytes":1.0}`:                                         1,
		`{"max_output_bytes":1e3}`:                                         1000,
		`{"max_output_bytes":1E+3}`:                                        1000,
		`{"max_output_bytes":2.50e1}`:                                      25,
		`{"max_output_bytes":1000e-3}`:                                     1,
		`{"max_output_bytes":-0}`:                                          0,
		`{"max_output_bytes":-0.0e-7}`:                                     0,
		`{"max_output_bytes":0e999999}`:                                    0,
		`{"max_output_bytes":9.223372036854775807e18}`:                     1<<63 - 1,
		`{"args":["1.0", "1e3"],"max_output_bytes":7.0,"env":{"A":"2.0"}}`: 7,
	} {
		var req SubmitRequest
		if err := decodeBytes([]byte(body), &req); err != nil || req.MaxOutputBytes != want {
			t.Errorf("decode %s: %v, max_output_bytes %d, want %d", body, err, req.MaxOutputBytes, want)
		}
		if strings.Contains(body, "args") && (req.Args[1] != "1e3" || req.Env["A"] != "2.0") {
			t.Errorf("decode %s: args %q env %q changed", body, req.Args, req.Env)
		}
	}
	for body, want := range map[string]string{
		`{"max_output_bytes":1.5}`:                                       `field "max_output_bytes" must be a whole number, not 1.5`,
		`{"max_output_bytes":1e-400}`:                                    `field "max_output_bytes" must be a whole number, not 1e-400`,
		`{"max_output_bytes":1e-99999999999999999999}`:                   `field "max_output_bytes" must be a whole number, not 1e-99999999999999999999`,
		`{"max_output_bytes":1e99999999999999999999}`:                    `field "max_output_bytes" is out of range: 1e99999999999999999999`,
		`{"max_output_bytes":9.223372036854775808e18}`:                   `field "max_output_bytes" is out of range: 9.223372036854775808e18`,
		`{"max_output_bytes":1e400}`:                                     `field "max_output_bytes" is out of range: 1e400`,
		`{"max_output_bytes":0.` + strings.Repeat("0", 1500) + `1e1500}`: `field "max_output_bytes" must be a whole number, not 0.` + strings.Repeat("0", 62) + `…`,
		`{"max_output_bytes":1e21}`:                                      `field "max_output_bytes" is out of range: 1e21`,
		`{"timeout_seconds":1e-400}`:                                     `field "timeout_seconds" is out of range: 1e-400 is too small to tell from 0`,
		`{"timeout_seconds":-1e-400}`:                                    `field "timeout_seconds" is out of range: -1e-400 is too small to tell from 0`,
		`{"expires_in_seconds":0.00001e-400}`:                            `field "expires_in_seconds" is out of range: 0.00001e-400 is too small to tell from 0`,
		`{"timeout_seconds":1` + strings.Repeat("0", 5000) + `}`:         `field "timeout_seconds" is out of range: 1` + strings.Repeat("0", 63) + `…`,
		`{"timeout_seconds":1e400}`:                                      `field "timeout_seconds" is out of range: 1e400`,
	} {
		var req SubmitRequest
		err := decodeBytes([]byte(body), &req)
		if order.ErrorCode(err) != order.CodeInvalid || !strings.Contains(err.Error(), want) || len(err.Error()) > 300 {
			t.Errorf("decode %s: %v, want invalid_request with %q", body, err, want)
		}
	}
	// 0 in any spelling is 0 (the default), and a number a float64 holds
	// only as a subnormal is not 0: order.Validate judges it.
	for body, zero := range map[string]bool{`{"timeout_seconds":-0}`: true, `{"timeout_seconds":0e-400}`: true, `{"timeout_seconds":5e-324}`: false} {
		var req SubmitRequest
		if err := decodeBytes([]byte(body), &req); err != nil || (req.TimeoutSeconds == 0) != zero {
			t.Errorf("decode %s: %v, timeout_seconds %g", body, err, req.TimeoutSeconds)
		}
	}
}

// TestDecodeRawValuesAreFree: a json.RawMessage holds any JSON, a list
// included, whose elements the element check must not read as bytes:
// an action's params are judged by the action, not by the decoder.
func TestDecodeRawValuesAreFree(t *testing.T) {
	var req ActionRunRequest
	if err := decodeBytes([]byte(`{"host":"h","params":{"id":["0042",null],"n":1,"b":true}}`), &req); err != nil {
		t.Fatalf("params holding a list: %v", err)
	}
	if string(req.Params["id"]) != `["0042",null]` {
		t.Errorf("params.id = %s", req.Params["id"])
	}
}

// TestWaitAndIDForms: ?wait takes a finite number of seconds; ids are
// UUIDs in their 36-character form only.
func TestWaitAndIDForms(t *testing.T) {
	for _, v := range []string{"Inf", "+Inf", "-1", "NaN", "soon"} {
		r, _ := http.NewRequest("POST", "/v1/orders?wait="+url.QueryEscape(v), nil)
		if _, err := waitOf(r, time.Minute); order.ErrorCode(err) != order.CodeInvalid {
			t.Errorf("wait=%s: %v, want invalid_request", v, err)
		}
	}
	id := "01a23572-7c0d-7000-8000-0123456789ab"
	if _, err := parseID(id); err != nil {
		t.Errorf("%s: %v", id, err)
	}
	if _, err := parseID(strings.ToUpper(id)); err != nil {
		t.Errorf("upper case: %v", err)
	}
	for _, v := range []string{"urn:uuid:" + id, "{" + id + "}", strings.ReplaceAll(id, "-", "")} {
		if _, err := parseID(v); err == nil {
			t.Errorf("%s: accepted", v)
		}
	}
}

// TestIdempotencyKeyHeader: one rule and one message for the header,
// whatever is wrong with it.
func TestIdempotencyKeyHeader(t *testing.T) {
	for _, k := range []string{strings.Repeat("k", 201), "a\tb", "a\x7fb"} {
		r, _ := http.NewRequest("POST", "/v1/orders", nil)
		r.Header.Set("Idempotency-Key", k)
		if _, err := idempotencyKeyOf(r); err == nil || err.Error() != "invalid_request: Idempotency-Key must be printable text of at most 200 bytes" {
			t.Errorf("%q: %v", k, err)
		}
	}
	r, _ := http.NewRequest("POST", "/v1/orders", nil)
	r.Header.Set("Idempotency-Key", strings.Repeat("k", 200))
	if k, err := idempotencyKeyOf(r); err != nil || len(k) != 200 {
		t.Errorf("200 bytes: %q %v", k, err)
	}
}

// TestDecodeOptional: a body that may be left out may also be white space
// or null (a Go client's nil map); anything else is decoded as decode
// does, which refuses a null body.
func TestDecodeOptional(t *testing.T) {
	for body, want := range map[string]order.Code{"": "", " \r\n\t": "", " null\n": "", `{"signal":"SIGINT"}`: "", `{"signal":`: order.CodeInvalid,
		`[]`: order.CodeInvalid} {
		r, _ := http.NewRequest("POST", "/v1/orders/x/cancel", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var req cancelRequest
		if err := decodeOptional(r, 1<<10, &req); order.ErrorCode(err) != want && !(want == "" && err == nil) {
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
	r, _ := http.NewRequest("POST", "/v1/orders/x/cancel", strings.NewReader(" "))
	var req cancelRequest
	if err := decodeOptional(r, 1<<10, &req); err != nil || req.Signal != "" {
		t.Errorf("white space without a Content-Type: %v %+v", err, req)
	}
}

// TestEncodeRefusesWhatJSONCannotWrite: a value encoding/json cannot
// write (a time whose UTC year is past 9999) answered its status with an
// empty body; it is a 500 with the error envelope.
func TestEncodeRefusesWhatJSONCannotWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	encode(rec, http.StatusOK, map[string]any{"at": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"code":"internal"`) {
		t.Fatalf("got %d %q, want 500 with the error envelope", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	encode(rec, http.StatusAccepted, map[string]any{"a": "<b>"})
	if rec.Code != http.StatusAccepted || rec.Body.String() != "{\"a\":\"<b>\"}\n" {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
}

// headerWriter is an http.ResponseWriter that keeps its header map and
// throws the body away: encode's own allocations, not a recorder's.
type headerWriter struct{ h http.Header }

func (w *headerWriter) Header() http.Header         { return w.h }
func (w *headerWriter) WriteHeader(int)             {}
func (w *headerWriter) Write(p []byte) (int, error) { return len(p), nil }

// TestEncodeAllocations: a small answer's encode. Its Content-Type was a
// slice made by Header.Set for every answer; it is one shared value
// (jsonContentType), which a later Add does not change.
func TestEncodeAllocations(t *testing.T) {
	if RaceEnabled {
		t.Skip("-race: sync.Pool drops a quarter of the encode buffers put back, an allocation an encode does not make otherwise")
	}
	w := &headerWriter{h: http.Header{}}
	v := &ErrorBody{Error: ErrorDetail{Code: order.CodeNotFound, Message: "no such order"}} // boxed once
	encode(w, http.StatusOK, v)
	n := testing.AllocsPerRun(200, func() { encode(w, http.StatusOK, v) })
	if n > 0 {
		t.Fatalf("%.0f allocations to encode a small answer, want none", n)
	}
	if got := w.h.Get("Content-Type"); got != "application/json" {
		t.Fatalf("Content-Type %q", got)
	}
	w.h.Add("Content-Type", "text/plain")
	if got := jsonContentType; len(got) != 1 || got[0] != "application/json" {
		t.Fatalf("an Add changed the shared Content-Type: %q", got)
	}
}

// TestDecodeCutBodySaysItEnds: a body cut short (a client's buffer, a
// proxy, a shell quote closed too early) is refused in one wording
// wherever the cut falls. After a comma in an object the walk read the
// next key's io.EOF and said "invalid JSON: EOF", inside a key or a
// string "unexpected EOF": Go's words for what the other cuts call
// "unexpected end".
func TestDecodeCutBodySaysItEnds(t *testing.T) {
	body := `{"host":"web-1","command":"echo","args":["a","b"],"env":{"A":"1","B":"2"},` +
		`"stdin":{"content":"aGk=","encode":"base64"},"dry_run":true,"timeout_seconds":30}`
	for n := 1; n < len(body); n++ {
		cut := body[:n]
		if strings.TrimSpace(cut) == "" {
			continue
		}
		var req SubmitRequest
		err := decodeBytes([]byte(cut), &req)
		if order.ErrorCode(err) != order.CodeInvalid || !strings.Contains(err.Error(), "unexpected end") || strings.Contains(err.Error(), "EOF") {
			t.Errorf("decode %s: %v, want invalid_request saying the body ends unexpectedly", cut, err)
		}
	}
}
