package api

import (
	"bytes"
	"reflect"
)

// quickCheckJSON is checkJSON's walk for the bodies clients send every
// day, in one pass over the bytes: no json.Decoder, no token values (a
// Decoder builds and drops a SyntaxError at the end of every scalar it
// reads, five allocations a key or value). ok says body passed the same
// checks as jsonWalker.value with the same rewrites. Anything it does not
// handle itself (a backslash escape, a refusal of any kind, nesting at the
// limit, an object of more than quickMaxKeys keys) is not ok, and
// checkJSON then walks the body the slow way, which accepts or refuses it
// and words the refusal: so this walk may only ever be stricter than that
// one, never more lenient (TestQuickCheckJSONAgreesWithTheWalk).
func quickCheckJSON(body []byte, t reflect.Type) (rewrites []numberRewrite, ok bool) {
	var keys [16][2]int // one allocation for the keys of a plain body
	w := quickWalker{b: body, keys: keys[:0]}
	if !w.value(t, true, 0, false) {
		return nil, false
	}
	w.space()
	if w.i != len(w.b) {
		return nil, false
	}
	return w.rewrites, true
}

// quickMaxKeys bounds an object's keys for the quick walk, whose
// duplicate check compares each key with those before it.
const quickMaxKeys = 64

// quickWalker is quickCheckJSON's position in the body.
type quickWalker struct {
	b        []byte
	i        int
	keys     [][2]int // offsets of the keys of the objects being walked
	rewrites []numberRewrite
}

// space skips JSON white space.
func (w *quickWalker) space() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// value walks the value at w.i against t as jsonWalker.value does; top
// is the body's own value (its path ""), elem an element of a list or map.
func (w *quickWalker) value(t reflect.Type, top bool, depth int, elem bool) bool {
	w.space()
	if w.i >= len(w.b) {
		return false
	}
	c := w.b[w.i]
	var got string // "" for null
	switch {
	case c == '{':
		got = "object"
	case c == '[':
		got = "array"
	case c == '"':
		got = "string"
	case c == 't' || c == 'f':
		got = "bool"
	case c == 'n':
	case c == '-' || '0' <= c && c <= '9':
		got = "number"
	default:
		return false
	}
	if elem && t != nil && got != "" && !fitsJSONType(t, got) {
		return false
	}
	isTime := t != nil && indirect(t) == timeType
	switch got {
	case "":
		if !w.literal("null") {
			return false
		}
		if top && t != nil && indirect(t).Kind() == reflect.Struct {
			return false
		}
		return !(elem && t != nil && !nullable(t))
	case "bool":
		return (w.literal("true") || w.literal("false")) && !isTime
	case "string":
		start := w.i + 1
		if !w.str() {
			return false
		}
		return !isTime || checkTime(string(w.b[start:w.i-1]), "") == nil
	case "number":
		start := w.i
		if !w.number() || isTime {
			return false
		}
		if t == nil {
			return true
		}
		rw, err := checkNumber(string(w.b[start:w.i]), indirect(t), "", int64(w.i))
		if err != nil {
			return false
		}
		if rw != nil {
			w.rewrites = append(w.rewrites, *rw)
		}
		return true
	}
	if depth >= maxJSONDepth {
		return false
	}
	t = indirect(t)
	w.i++
	if got == "array" {
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && t.Elem().Kind() != reflect.Uint8 {
			et = t.Elem()
		}
		w.space()
		if w.i < len(w.b) && w.b[w.i] == ']' {
			w.i++
			return true
		}
		for {
			if !w.value(et, false, depth+1, true) {
				return false
			}
			if more, ok := w.next(']'); !more {
				return ok
			}
		}
	}
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = cachedJSONFields(t)
	}
	base := len(w.keys)
	defer func() { w.keys = w.keys[:base] }()
	w.space()
	if w.i < len(w.b) && w.b[w.i] == '}' {
		w.i++
		return true
	}
	for {
		w.space()
		if w.i >= len(w.b) || w.b[w.i] != '"' {
			return false
		}
		start := w.i + 1
		if !w.str() {
			return false
		}
		key := w.b[start : w.i-1]
		if len(w.keys)-base >= quickMaxKeys {
			return false
		}
		for _, k := range w.keys[base:] {
			if bytes.Equal(w.b[k[0]:k[1]], key) {
				return false
			}
		}
		w.keys = append(w.keys, [2]int{start, w.i - 1})
		var ft reflect.Type
		switch {
		case fields != nil:
			f, known := fields[string(key)]
			if !known {
				return false
			}
			ft = f
		case t != nil && t.Kind() == reflect.Map:
			ft = t.Elem()
		}
		w.space()
		if w.i >= len(w.b) || w.b[w.i] != ':' {
			return false
		}
		w.i++
		if !w.value(ft, false, depth+1, fields == nil) {
			return false
		}
		if more, ok := w.next('}'); !more {
			return ok
		}
	}
}

// next reads what follows a list's element or an object's member: more
// after a comma, ok (and not more) after the closing bracket close.
func (w *quickWalker) next(close byte) (more, ok bool) {
	w.space()
	if w.i < len(w.b) && w.b[w.i] == ',' {
		w.i++
		return true, true
	}
	if w.i < len(w.b) && w.b[w.i] == close {
		w.i++
		return false, true
	}
	return false, false
}

// str reads a string at w.i (its opening quote) with no escape and no
// control character, and leaves w.i past its closing quote.
func (w *quickWalker) str() bool {
	for j := w.i + 1; j < len(w.b); j++ {
		switch c := w.b[j]; {
		case c == '"':
			w.i = j + 1
			return true
		case c == '\\' || c < 0x20:
			return false
		}
	}
	return false
}

// literal reads s (true, false, null) at w.i.
func (w *quickWalker) literal(s string) bool {
	if len(w.b)-w.i < len(s) || string(w.b[w.i:w.i+len(s)]) != s {
		return false
	}
	w.i += len(s)
	return true
}

// number reads a JSON number at w.i: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (w *quickWalker) number() bool {
	b, i := w.b, w.i
	digits := func() bool {
		s := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > s
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	w.i = i
	return true
}
