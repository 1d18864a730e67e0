package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/order"
)

// maxJSONDepth bounds nesting so a hostile body cannot make the decoder
// recurse deeply.
const maxJSONDepth = 32

// checkJSON walks body once, alongside the Go type it will be decoded into,
// and refuses what encoding/json would silently accept: duplicate keys (the
// last one wins there), object keys that match a field only when case is
// ignored ({"Command": …} sets Command there), unknown fields, deep nesting
// and trailing data. These are encoding/json/v2's defaults; v2 is still an
// experiment in our Go, so the check is ours. Map keys stay free
// (env may hold both FOO and foo); only exact repeats are refused there.
//
// It returns the body the typed decode is to read: body itself, or a copy
// in which each whole number written with a fraction or an exponent for
// an integer field (1.0, 1e3) is written in digits. openapi.yaml is
// OpenAPI 3.1, whose `type: integer` (JSON Schema 2020-12) is any number
// with a zero fractional part; encoding/json takes digits only.
func checkJSON(body []byte, t reflect.Type) ([]byte, error) {
	if err := CheckJSONText(body); err != nil {
		return nil, err
	}
	if rewrites, ok := quickCheckJSON(body, t); ok {
		return rewritten(body, rewrites), nil
	}
	return walkJSON(body, t)
}

// walkJSON is checkJSON's walk with encoding/json's tokens, which words
// every refusal.
func walkJSON(body []byte, t reflect.Type) ([]byte, error) {
	w := jsonWalker{dec: json.NewDecoder(bytes.NewReader(body))}
	// Numbers stay text here: read as float64, 1e400 failed in this walk,
	// which knows no field names; the typed decode names the field.
	w.dec.UseNumber()
	if err := w.value(t, "", 0, false); err != nil {
		return nil, err
	}
	if _, err := w.dec.Token(); err != io.EOF {
		return nil, order.Errorf(order.CodeInvalid, "invalid JSON: trailing data after the value")
	}
	return rewritten(body, w.rewrites), nil
}

// rewritten is body with rewrites (in the body's order) made.
func rewritten(body []byte, rewrites []numberRewrite) []byte {
	if len(rewrites) == 0 {
		return body
	}
	out := make([]byte, 0, len(body))
	last := int64(0)
	for _, rw := range rewrites {
		out = append(append(out, body[last:rw.start]...), rw.text...)
		last = rw.end
	}
	return append(out, body[last:]...)
}

// jsonWalker reads one token stream for checkJSON.
type jsonWalker struct {
	dec      *json.Decoder
	rewrites []numberRewrite
}

// numberRewrite replaces body[start:end], a number, with text.
type numberRewrite struct {
	start, end int64
	text       string
}

// value checks the next JSON value against t (nil when the shape is free).
// elem says it is an element of a list or a map, where null is refused for
// a type that cannot hold it: encoding/json would make ["a", null] the
// arguments "a" and "".
func (w *jsonWalker) value(t reflect.Type, path string, depth int, elem bool) error {
	tok, err := w.dec.Token()
	if err == io.EOF {
		return order.Errorf(order.CodeInvalid, "invalid JSON: unexpected end")
	}
	if err != nil {
		return order.Errorf(order.CodeInvalid, "invalid JSON: %s", jsonProblem(err))
	}
	if got, fits := tokenFits(t, tok); elem && !fits {
		// encoding/json names only the list or map ("field "args" must
		// be a string"), which reads as if the list itself were wrong:
		// name the element, as for null below.
		field := fieldName(path)
		return order.FieldError(order.CodeInvalid, field, "invalid JSON: %s must be %s, not %s", field, jsonTypeName(t), got)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		if tok == nil && path == "" && t != nil && indirect(t).Kind() == reflect.Struct {
			// encoding/json decodes null into a struct as nothing at all:
			// a null body was an empty request, refused for its first
			// empty field ("host must be …").
			return order.Errorf(order.CodeInvalid, "invalid JSON: the body must be an object, not null")
		}
		if tok == nil && elem && t != nil && !nullable(t) {
			field := fieldName(path)
			return order.FieldError(order.CodeInvalid, field, "invalid JSON: %s must be %s, not null", field, jsonTypeName(t))
		}
		if tok != nil && indirect(t) == timeType {
			// time.Time's own errors speak Go ("Time.UnmarshalJSON",
			// the layout 2006-01-02T15:04:05Z07:00) and name no field.
			return checkTime(tok, fieldName(path))
		}
		if num, ok := tok.(json.Number); ok && t != nil {
			// InputOffset: just past the number, whose text is num.
			rw, err := checkNumber(string(num), indirect(t), fieldName(path), w.dec.InputOffset())
			if rw != nil {
				w.rewrites = append(w.rewrites, *rw)
			}
			return err
		}
		return nil // scalars: the typed decode checks their types
	}
	if depth >= maxJSONDepth {
		return order.Errorf(order.CodeInvalid, "invalid JSON: nested deeper than %d levels", maxJSONDepth)
	}
	t = indirect(t)
	if d == '[' {
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && t.Elem().Kind() != reflect.Uint8 {
			// Not bytes: json.RawMessage holds any JSON, []byte is
			// base64 text.
			elem = t.Elem()
		}
		for w.dec.More() {
			if err := w.value(elem, path+"[]", depth+1, true); err != nil {
				return err
			}
		}
		return w.end()
	}
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = cachedJSONFields(t)
	}
	seen := map[string]struct{}{}
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return order.Errorf(order.CodeInvalid, "invalid JSON: %s", jsonProblem(err))
		}
		key, _ := tok.(string)
		if _, dup := seen[key]; dup {
			return order.FieldError(order.CodeInvalid, path+key, "invalid JSON: duplicate key %q", key)
		}
		seen[key] = struct{}{}
		var ft reflect.Type
		switch {
		case fields != nil:
			f, known := fields[key]
			if !known {
				return unknownField(fields, path, key)
			}
			ft = f
		case t != nil && t.Kind() == reflect.Map:
			ft = t.Elem()
		}
		if err := w.value(ft, path+key+".", depth+1, fields == nil); err != nil {
			return err
		}
	}
	return w.end()
}

// checkNumber checks a number for a field of kind t.Kind(), as the typed
// decode cannot: a whole number written as 1.0 or 1e3 for an integer
// field is rewritten in digits (see checkJSON), a fraction is refused, and
// so is a number that is not 0 but that a float64 reads as 0 (1e-400,
// which timeout_seconds took as "none given", the default). Numbers too
// large for their field are refused in the words they were sent in.
//
// end is the offset just past the number in the body; rw, when not nil,
// is the rewrite to make there.
func checkNumber(lit string, t reflect.Type, field string, end int64) (rw *numberRewrite, err error) {
	shown := lit // as refusals show it: a body may hold a megabyte of digits
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		mant, _, _ := strings.Cut(strings.ToLower(lit), "e")
		if f, err := strconv.ParseFloat(lit, t.Bits()); err == nil && f == 0 && strings.ContainsAny(mant, "123456789") {
			return nil, order.FieldError(order.CodeInvalid, field, "invalid JSON: field %q is out of range: %s is too small to tell from 0", field, shown)
		}
		return nil, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
	default:
		return nil, nil // a string or a bool: tokenFits and the typed decode name it
	}
	text, whole, huge := integerText(lit)
	switch {
	case !whole:
		return nil, order.FieldError(order.CodeInvalid, field, "invalid JSON: field %q must be a whole number, not %s", field, shown)
	case huge || !fitsInt(text, t):
		return nil, order.FieldError(order.CodeInvalid, field, "invalid JSON: field %q is out of range: %s", field, shown)
	case text == lit:
		return nil, nil
	}
	return &numberRewrite{start: end - int64(len(lit)), end: end, text: text}, nil
}

// fitsInt reports whether the whole number text fits t, an integer kind.
func fitsInt(text string, t reflect.Type) bool {
	var err error
	if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uintptr {
		_, err = strconv.ParseUint(text, 10, t.Bits())
	} else {
		_, err = strconv.ParseInt(text, 10, t.Bits())
	}
	return err == nil
}

// integerText reads the JSON number lit as a whole number, in digits:
// "1.0", "1e3" and "-0.0e5" are "1", "1000" and "0". whole is false for a
// fraction (1.5, 1e-400); huge says a whole number has more digits than
// any integer field holds, and text is then empty.
func integerText(lit string) (text string, whole, huge bool) {
	s, neg := strings.CutPrefix(lit, "-")
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	shift := -len(frac) // the value is digits × 10^shift
	trimmed := strings.TrimRight(digits, "0")
	shift += len(digits) - len(trimmed)
	digits = trimmed
	if digits == "" {
		return "0", true, false
	}
	const maxDigits = 20 // 2^64−1 has 20
	if hasExp {
		// A JSON exponent is digits with an optional sign. Past ±limit
		// it says "far too large" or "a fraction" whatever the digits
		// (their zeros move the point by at most len(lit)), and is
		// never expanded.
		limit := len(lit) + maxDigits
		e, err := strconv.Atoi(exp)
		if err != nil || e > limit || e < -limit {
			if strings.HasPrefix(exp, "-") {
				return "", false, false
			}
			return "", true, true
		}
		shift += e
	}
	if shift < 0 {
		return "", false, false
	}
	if len(digits)+shift > maxDigits {
		return "", true, true
	}
	text = digits + strings.Repeat("0", shift)
	if neg {
		text = "-" + text
	}
	return text, true, false
}

// fieldName is a walk's path as errors name the field: "env", "args[]".
func fieldName(path string) string {
	return strings.ReplaceAll(strings.TrimSuffix(path, "."), ".[]", "[]")
}

var timeType = reflect.TypeFor[time.Time]()

// checkTime refuses a value that time.Time would not decode, naming its
// field in JSON's words.
func checkTime(tok json.Token, field string) error {
	s, ok := tok.(string)
	if ok {
		var t time.Time
		if t.UnmarshalJSON([]byte(strconv.Quote(s))) == nil {
			return nil
		}
	}
	got := strconv.Quote(s[:min(len(s), 64)])
	if !ok {
		got = fmt.Sprintf("%T", tok)
		switch tok.(type) {
		case json.Number:
			got = "a number"
		case bool:
			got = "true or false"
		}
	}
	return order.FieldError(order.CodeInvalid, field, "invalid JSON: field %q must be an RFC 3339 time such as 2025-01-31T15:04:05Z, not %s", field, got)
}

// tokenFits reports whether the value starting with tok is of the JSON
// type t decodes, for a t that is a string, a number or true or false
// (any other t is left to the typed decode, and null to the checks
// below), and names the value's type as encoding/json does.
func tokenFits(t reflect.Type, tok json.Token) (string, bool) {
	if t == nil || tok == nil {
		return "null", true
	}
	var got string
	switch v := tok.(type) {
	case json.Delim:
		got = "object"
		if v == '[' {
			got = "array"
		}
	case json.Number:
		got = "number"
	case bool:
		got = "bool"
	default:
		got = "string"
	}
	return got, fitsJSONType(t, got)
}

// fitsJSONType is tokenFits for a value of JSON type got ("string",
// "number", "bool", "object", "array") and a t that is not nil.
func fitsJSONType(t reflect.Type, got string) bool {
	switch indirect(t).Kind() {
	case reflect.String:
		return got == "string"
	case reflect.Bool:
		return got == "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return got == "number"
	}
	return true
}

// nullable reports whether a null decodes into t as "no value" rather
// than as a zero value that reads like one sent.
func nullable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Slice, reflect.Map: // json.RawMessage too
		return true
	}
	return false
}

// jsonTypeName is what a client calls the JSON value t decodes, in an
// error message (never Go's name for t).
func jsonTypeName(t reflect.Type) string {
	t = indirect(t)
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another type"
}

// end consumes the closing delimiter of an array or object.
func (w *jsonWalker) end() error {
	if _, err := w.dec.Token(); err != nil {
		if err == io.EOF {
			return order.Errorf(order.CodeInvalid, "invalid JSON: unexpected end")
		}
		return order.Errorf(order.CodeInvalid, "invalid JSON: %s", jsonProblem(err))
	}
	return nil
}

// unknownField names the field; when only its case differs from a known
// one, it says so, since that is the usual mistake (and the usual attack).
// Otherwise it lists the fields the object takes, as an unknown query
// parameter's refusal does: a sender who guessed "timeout" or "env" for
// timeout_seconds or a runbook's env_vars was told only what it is not.
func unknownField(fields map[string]reflect.Type, path, key string) error {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return order.FieldError(order.CodeInvalid, path+key,
				"invalid JSON: unknown field %q (field names are case-sensitive: %q)", key, name)
		}
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	where := "the body"
	if path != "" {
		where = strings.TrimSuffix(path, ".")
	}
	return order.FieldError(order.CodeInvalid, path+key, "invalid JSON: unknown field %q (%s takes %s)", key, where, strings.Join(names, ", "))
}

// indirect strips pointers; nil stays nil (a free shape).
func indirect(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// jsonFieldsOf caches jsonFields per struct type: a type's fields never
// change, and every request body's walk (SubmitRequest and the structs in
// it) would otherwise build the same maps again.
var jsonFieldsOf sync.Map // reflect.Type -> map[string]reflect.Type

// cachedJSONFields is jsonFields(t), built once per type. The map it
// returns is shared: only read it.
func cachedJSONFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := jsonFieldsOf.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m, _ := jsonFieldsOf.LoadOrStore(t, jsonFields(t))
	return m.(map[string]reflect.Type)
}

// jsonFields returns the exact JSON names of t's fields and their types,
// following encoding/json's rules for tags, "-" and embedded structs.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			if et := indirect(f.Type); et.Kind() == reflect.Struct {
				for k, v := range jsonFields(et) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// CheckJSONText refuses a body that is not valid UTF-8, or that escapes half a
// UTF-16 surrogate pair (\ud800 alone): encoding/json would replace either
// with U+FFFD, so the command that ran would not be the one sent.
func CheckJSONText(body []byte) error {
	if !utf8.Valid(body) {
		off := 0
		for off < len(body) {
			r, n := utf8.DecodeRune(body[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return &order.Error{Code: order.CodeInvalid, Message: fmt.Sprintf("invalid JSON: not valid UTF-8 at offset %d", off),
			Details: map[string]any{"offset": off}}
	}
	inString := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			i++
			if i >= len(body) || body[i] != 'u' {
				continue
			}
			r, ok := hex4(body, i+1)
			if !ok {
				continue // malformed: the decoder explains
			}
			i += 4
			switch {
			case r >= 0xdc00 && r <= 0xdfff:
				return loneSurrogate(i - 5)
			case r >= 0xd800 && r <= 0xdbff:
				if i+2 >= len(body) || body[i+1] != '\\' || body[i+2] != 'u' {
					return loneSurrogate(i - 5)
				}
				lo, ok := hex4(body, i+3)
				if !ok || lo < 0xdc00 || lo > 0xdfff {
					return loneSurrogate(i - 5)
				}
				i += 6
			}
		}
	}
	return nil
}

func loneSurrogate(off int) error {
	return &order.Error{Code: order.CodeInvalid,
		Message: fmt.Sprintf("invalid JSON: \\u escape at offset %d is half a surrogate pair (not valid UTF-16)", off),
		Details: map[string]any{"offset": off}}
}

// hex4 reads four hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// jsonProblem turns a decoder error into text that names the field.
func jsonProblem(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// A body cut short: the Decoder says "EOF" after a comma and
		// "unexpected EOF" inside a string, Go's words for what every
		// other cut calls an unexpected end.
		return "unexpected end"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Sprintf("the body must be %s, not %s", jsonTypeName(te.Type), te.Value)
		}
		// A number the field cannot hold: encoding/json says "number 1.5".
		if num, ok := strings.CutPrefix(te.Value, "number "); ok {
			if len(num) > 64 {
				num = num[:64] + "…" // a body may hold a megabyte of digits
			}
			if jsonTypeName(te.Type) == "a whole number" && strings.ContainsAny(num, ".eE") {
				return fmt.Sprintf("field %q must be a whole number, not %s", te.Field, num)
			}
			return fmt.Sprintf("field %q is out of range: %s", te.Field, num)
		}
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, jsonTypeName(te.Type), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at offset %d", se.Error(), se.Offset)
	}
	return err.Error()
}
