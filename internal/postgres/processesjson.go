package postgres

import (
	"encoding/json"
	"strconv"
)

// processesOf is an order's processes column (jsonb; nil when NULL) as
// encoding/json decodes it into a map[string]any, read without
// encoding/json when it has the form the worker writes (worker/handle.go:
// a flat object of a few keys whose values are strings, numbers and
// flags): keys and strings of printable ASCII without escapes, numbers as
// float64, true, false and null. Anything else (an escape, a nested
// object or list, a number out of float64's range, trailing data) goes to
// encoding/json, as every row did: its reflection and scanner were about
// 1.3 % of serve's CPU per synchronous order and more than ten
// allocations on every read of a finished order (the answer's re-read,
// GET, each order of a list; docs/benchmarks.md, the thirty-second
// round). TestProcessesAsEncodingJSON holds the two to the same maps.
func processesOf(raw []byte) (map[string]any, error) {
	if raw == nil {
		return nil, nil
	}
	if m, ok := plainProcesses(raw); ok {
		return m, nil
	}
	var m map[string]any
	err := json.Unmarshal(raw, &m)
	return m, err
}

// processKeys are the keys the worker writes in processes, and
// processVerified the values of its "verified" (worker/executor's
// Verified*): read as one of these, a key or a string costs no
// allocation of its own (a string held in an interface value is two).
var (
	processKeys     = []string{"pgid", "verified", "group_gone", "cgroup", "escaped", "adopted"}
	processVerified = []any{"group", "cgroup", "subreaper"}
)

// plainProcesses reads b when it is a flat object of plain values
// (processesOf); ok is false for any other form.
func plainProcesses(b []byte) (m map[string]any, ok bool) {
	i := jsonSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return nil, false
	}
	m = make(map[string]any, len(processKeys))
	if i = jsonSpace(b, i+1); i < len(b) && b[i] == '}' {
		return m, jsonSpace(b, i+1) == len(b)
	}
	for {
		k, next := plainString(b, i)
		if next < 0 {
			return nil, false
		}
		if i = jsonSpace(b, next); i == len(b) || b[i] != ':' {
			return nil, false
		}
		v, next := plainValue(b, jsonSpace(b, i+1))
		if next < 0 {
			return nil, false
		}
		key := ""
		for _, known := range processKeys {
			if string(k) == known {
				key = known
				break
			}
		}
		if key == "" {
			key = string(k)
		}
		m[key] = v // a repeated key: the last one, as encoding/json
		if i = jsonSpace(b, next); i < len(b) && b[i] == ',' {
			i = jsonSpace(b, i+1)
			continue
		}
		if i == len(b) || b[i] != '}' {
			return nil, false
		}
		return m, jsonSpace(b, i+1) == len(b)
	}
}

// plainValue reads the plain JSON value at b[i] (a string of plainString's
// form, a number, true, false or null) as encoding/json decodes it into an
// interface value: next is the index after it, -1 when it is no such
// value.
func plainValue(b []byte, i int) (v any, next int) {
	if i == len(b) {
		return nil, -1
	}
	switch c := b[i]; {
	case c == '"':
		s, next := plainString(b, i)
		if next < 0 {
			return nil, -1
		}
		for _, known := range processVerified {
			if string(s) == known.(string) {
				return known, next
			}
		}
		return string(s), next
	case c == '-' || '0' <= c && c <= '9':
		end := jsonNumber(b, i)
		if end < 0 {
			return nil, -1
		}
		f, err := strconv.ParseFloat(string(b[i:end]), 64)
		if err != nil {
			return nil, -1 // out of range: encoding/json's error, from it
		}
		return f, end
	}
	for _, lit := range []struct {
		text string
		v    any
	}{{"true", true}, {"false", false}, {"null", nil}} {
		if len(b)-i >= len(lit.text) && string(b[i:i+len(lit.text)]) == lit.text {
			return lit.v, i + len(lit.text)
		}
	}
	return nil, -1
}

// plainString reads the JSON string at b[i] when every byte in it is
// printable ASCII and none is an escape (read so, it is its own text):
// the text between the quotes and the index after the closing one; next
// is -1 for any other string, or none.
func plainString(b []byte, i int) (s []byte, next int) {
	if i == len(b) || b[i] != '"' {
		return nil, -1
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, -1
		}
	}
	return nil, -1
}

// jsonNumber is the index after the JSON number at b[i] (RFC 8259's
// grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), -1 when
// there is none.
func jsonNumber(b []byte, i int) int {
	digits := func(i int) int {
		j := i
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		return j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

// jsonSpace is the index of the first byte of b from i on that is not
// JSON white space (len(b) if there is none).
func jsonSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
