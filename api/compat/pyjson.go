package compat

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/pyrepr"
)

// pyUnmarshal decodes a request body of one of the Python originals into
// v as json.loads and a dict lookup read it there: a key is a field only
// when it is spelled exactly as the field (encoding/json also matches
// {"ARGS": …} to args, and the last of args and Args wins, so a filter in
// front that reads keys as the original did would see another request),
// and a body that is not valid UTF-8 is refused rather than decoded with
// U+FFFD in place of the bad bytes (the command that ran would not be the
// one sent). Unknown keys are ignored, as the originals ignored them, and
// an integer json.loads would refuse for its length is refused here.
func pyUnmarshal(data []byte, v any) error {
	data, err := flaskText(data)
	if err != nil {
		return err
	}
	if err := pyCheck(data); err != nil {
		return err
	}
	exact, err := exactKeys(data, reflect.TypeOf(v))
	if err != nil {
		return err
	}
	return json.Unmarshal(exact, v)
}

// flaskText is the text json.loads read from a Vigrid or stage0 body,
// as UTF-8: Flask's request.get_json handed it the raw bytes, and
// json.loads detects their encoding (json.detect_encoding): a UTF-32,
// UTF-16 or UTF-8 byte order mark, or the zero bytes around an ASCII
// first character of UTF-16 or UTF-32 without one; else UTF-8. So a body
// saved as UTF-16 (PowerShell's Out-File) or with a BOM was understood
// there. httpexec's Quart decoded the body as UTF-8 first, so pyLoads
// does not do this.
func flaskText(data []byte) ([]byte, error) {
	var unit int
	var order binary.ByteOrder
	switch b := data; {
	case bytes.HasPrefix(b, []byte{0, 0, 0xfe, 0xff}):
		unit, order, data = 4, binary.BigEndian, b[4:]
	case bytes.HasPrefix(b, []byte{0xff, 0xfe, 0, 0}):
		unit, order, data = 4, binary.LittleEndian, b[4:]
	case bytes.HasPrefix(b, []byte{0xfe, 0xff}):
		unit, order, data = 2, binary.BigEndian, b[2:]
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}):
		unit, order, data = 2, binary.LittleEndian, b[2:]
	case bytes.HasPrefix(b, []byte{0xef, 0xbb, 0xbf}):
		return b[3:], nil
	case len(b) >= 4 && b[0] == 0 && b[1] != 0, len(b) == 2 && b[0] == 0:
		unit, order = 2, binary.BigEndian
	case len(b) >= 4 && b[0] == 0:
		unit, order = 4, binary.BigEndian
	case len(b) >= 4 && b[1] == 0 && (b[2] != 0 || b[3] != 0), len(b) == 2 && b[1] == 0:
		unit, order = 2, binary.LittleEndian
	case len(b) >= 4 && b[1] == 0:
		unit, order = 4, binary.LittleEndian
	default:
		return data, nil
	}
	if len(data)%unit != 0 {
		return nil, errors.New("truncated UTF-16 or UTF-32 data")
	}
	bad := errors.New("invalid UTF-16 or UTF-32 data")
	var out []byte
	for i := 0; i < len(data); i += unit {
		var r rune
		if unit == 4 {
			r = rune(order.Uint32(data[i:]))
		} else if r = rune(order.Uint16(data[i:])); utf16.IsSurrogate(r) {
			if i+4 > len(data) {
				return nil, bad
			}
			if r = utf16.DecodeRune(r, rune(order.Uint16(data[i+2:]))); r == utf8.RuneError {
				return nil, bad // not a surrogate pair
			}
			i += 2
		}
		if !utf8.ValidRune(r) {
			return nil, bad
		}
		out = utf8.AppendRune(out, r)
	}
	return out, nil
}

// writePyJSON answers v as Flask's jsonify did for Vigrid and stage0:
// JSON with every character past ASCII escaped (ensure_ascii: \u00e9, a
// surrogate pair beyond the BMP), <, > and & as they are, and a newline
// after it.
func writePyJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, pyJSON(v))
}

// writeQuartJSON answers v as Quart 0.17's jsonify did for httpexec: as
// writePyJSON, without the newline, which Flask added and Quart did not.
func writeQuartJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, strings.TrimSuffix(pyJSON(v), "\n"))
}

// pyJSON is writePyJSON's text of v, its newline included.
func pyJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return pyASCII(buf.String())
}

// pyJSONText is s as writePyJSON writes it inside a JSON string, without
// the quotes: for an answer written a piece at a time (pyJSONAround,
// writePyJSONText).
func pyJSONText(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	js := buf.String()
	return pyASCII(js[1 : len(js)-2]) // the quotes and the newline
}

// writePyJSONText writes s as pyJSONText does, 32 KiB at a time (cut
// before a character's first byte, where JSON's escaping of s is the same
// as of its parts), so that a long s is not copied whole to be escaped.
func writePyJSONText(w io.Writer, s string) error {
	for len(s) > 0 {
		n := min(len(s), 32<<10)
		for n < len(s) && n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		if n == 0 {
			n = min(len(s), 32<<10)
		}
		if _, err := io.WriteString(w, pyJSONText(s[:n])); err != nil {
			return err
		}
		s = s[n:]
	}
	return nil
}

// pyJSONAround is writePyJSON's text of v split around the value of its
// string field key, which is empty in v: head ends with the value's
// opening quote, tail starts with its closing one. Between them an answer
// writes a long value a piece at a time (pyJSONText), never whole in
// memory.
func pyJSONAround(v map[string]any, key string) (head, tail string) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	js := pyASCII(buf.String())
	field := pyJSONText(key) + `":""`
	i := strings.Index(js, `"`+field) + len(field)
	return js[:i], js[i:]
}

// pyASCII is JSON text js with what json.dumps's ensure_ascii escapes
// escaped: DEL and everything past ASCII. Such characters can only be
// inside strings, so the text stays the same JSON.
func pyASCII(js string) string {
	i := strings.IndexFunc(js, func(r rune) bool { return r > 0x7e })
	if i < 0 {
		return js
	}
	var b strings.Builder
	b.WriteString(js[:i])
	for _, r := range js[i:] {
		if r > 0x7e {
			pyrepr.WriteUEscape(&b, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// pyLoads is json.loads(data) for a body read as any value: the checks
// of pyUnmarshal, numbers kept as their text (1e400 is a float to Python,
// not an error).
func pyLoads(data []byte) (any, error) {
	if err := pyCheck(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("extra data after the JSON value")
	}
	return v, nil
}

// pyTruthy is Python's bool() of a value json.loads made.
func pyTruthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case json.Number:
		if !strings.ContainsAny(string(v), ".eE") {
			return strings.Trim(string(v), "-0") != "" // an int, of any size
		}
		f, _ := strconv.ParseFloat(string(v), 64) // ±Inf past the range, as float()
		return f != 0
	case float64:
		return v != 0
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

// exactKeys returns data with the members of every object decoded into a
// struct of t kept only when their key names a field of it exactly.
// What is not an object where t has a struct is returned as it is, for
// json.Unmarshal to judge.
func exactKeys(data []byte, t reflect.Type) ([]byte, error) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || t == reflect.TypeFor[json.RawMessage]() {
		return data, nil
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return data, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &members); err != nil {
		return nil, err
	}
	kept := make(map[string]json.RawMessage, len(members))
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if raw, ok := members[name]; ok {
			inner, err := exactKeys(raw, f.Type)
			if err != nil {
				return nil, err
			}
			kept[name] = inner
		}
	}
	return json.Marshal(kept)
}

// pyCheck refuses what json.loads would, before any decoding: text that
// is not valid UTF-8, and an integer too long for it.
func pyCheck(data []byte) error {
	if err := api.CheckJSONText(data); err != nil {
		return err
	}
	if !pyIntsFit(data) {
		return errIntTooLong
	}
	return nil
}

// pyIntDigits is CPython's default limit on the digits of an int read
// from text (since 3.11, 3.10.7, 3.9.14, 3.8.14 and 3.7.14): json.loads
// raises ValueError for a longer integer, so the originals refused the body.
const pyIntDigits = 4300

// errIntTooLong is json.loads's ValueError for an integer over pyIntDigits.
var errIntTooLong = errors.New("an integer has more than 4300 digits")

// pyIntsFit reports whether json.loads takes raw as far as its integers
// go: none may be longer than pyIntDigits. What is not JSON at all is the
// decoder's to report.
func pyIntsFit(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return true
		}
		if n, ok := tok.(json.Number); ok && !strings.ContainsAny(string(n), ".eE") &&
			len(strings.TrimPrefix(string(n), "-")) > pyIntDigits {
			return false
		}
	}
}
