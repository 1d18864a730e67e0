package api

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/jsonenc"
)

// processMap is an answer's processes (Order.Processes): what
// order.Order.Processes holds, the JSON PostgreSQL keeps decoded into
// Go's JSON values. encoding/json wrote it by reflection, a copy of each
// key and value: 7 of the 9 allocations of a finished order's encode
// (docs/benchmarks.md, "The sync order's wait side").
type processMap map[string]any

// MarshalJSON writes m as encoding/json writes a map[string]any: keys
// sorted, strings with encode's escapes (the encoder escapes HTML, where
// it does, in what MarshalJSON returns, as it does in a map it walks). A
// value that is not one of JSON's own (a number of another Go type, a
// string that is not UTF-8, a NaN) sends the whole map to encoding/json.
func (m processMap) MarshalJSON() ([]byte, error) {
	if b, ok := appendJSONValue(make([]byte, 0, 128), map[string]any(m)); ok {
		return b, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any(m)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// appendJSONValue appends v as encoding/json writes it (without HTML
// escapes) when v is one of the values encoding/json decodes JSON into;
// ok is false for anything else.
func appendJSONValue(b []byte, v any) (_ []byte, ok bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case bool:
		return strconv.AppendBool(b, x), true
	case string:
		if !utf8.ValidString(x) {
			return b, false
		}
		return jsonenc.AppendString(b, x, false), true
	case float64:
		return appendJSONFloat(b, x)
	case []any:
		if x == nil {
			return append(b, "null"...), true
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendJSONValue(b, e); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case map[string]any:
		if x == nil {
			return append(b, "null"...), true
		}
		var small [8]string
		keys := small[:0]
		for k := range x {
			if !utf8.ValidString(k) {
				return b, false
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(jsonenc.AppendString(b, k, false), ':')
			if b, ok = appendJSONValue(b, x[k]); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	}
	return b, false
}

// appendJSONFloat is encoding/json's float64: the shortest form, in
// exponent form below 1e-6 and from 1e21, with e-07 written e-7.
func appendJSONFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if n := len(b); format == 'e' && n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
		b[n-2] = b[n-1]
		b = b[:n-1]
	}
	return b, true
}
