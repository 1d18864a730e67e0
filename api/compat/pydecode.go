package compat

import (
	"strings"
	"unicode/utf8"
)

// pyDecode is b decoded as Python's bytes.decode("utf-8", "replace") does
// it, which is how Vigrid and stage0 turned output into text: each maximal
// subpart of an ill-formed sequence (the longest start of a valid
// sequence, or else one byte) becomes one U+FFFD. strings.ToValidUTF8
// would turn a whole run of bad bytes into one.
func pyDecode(b string) string {
	if utf8.ValidString(b) {
		return b
	}
	var out strings.Builder
	out.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		if r, size := utf8.DecodeRuneInString(b[i:]); r != utf8.RuneError || size > 1 {
			out.WriteString(b[i : i+size])
			i += size
			continue
		}
		out.WriteRune(utf8.RuneError)
		i += maximalSubpart(b[i:])
	}
	return out.String()
}

// maximalSubpart is the length of the ill-formed sequence at the start of
// s that one U+FFFD replaces (Unicode §3.9, "U+FFFD substitution of
// maximal subparts"): a lead byte and the continuation bytes that could
// still have made it valid.
func maximalSubpart(s string) int {
	lo, hi, need := byte(0x80), byte(0xBF), 0
	switch c := s[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		lo, need = 0xA0, 2
	case c == 0xED:
		hi, need = 0x9F, 2
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		lo, need = 0x90, 3
	case c == 0xF4:
		hi, need = 0x8F, 3
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	}
	n := 1
	for ; n <= need && n < len(s); n++ {
		if s[n] < lo || s[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF // only the second byte has a narrower range
	}
	return n
}
