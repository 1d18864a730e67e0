// Package pyrepr writes strings as Python 3 writes them, for the compat
// surfaces whose originals were Python programs: repr() of a str, and a
// str as json.dumps writes it.
package pyrepr

import (
	"fmt"
	"strings"
	"unicode"
)

// Repr is Python's repr() of s: single quotes unless s has a single
// quote and no double one, and escapes for the quote, the backslash and
// what is not printable. Python's printable is every character outside
// the categories C and Z but the space, which is unicode.IsPrint; the two
// disagree only on characters their Unicode versions assign differently
// (Go's tables are Unicode 15.0, as in CPython 3.12; 3.11 has 14.0).
func Repr(s string) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, c := range s {
		switch {
		case c == quote || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case unicode.IsPrint(c):
			b.WriteRune(c)
		case c <= 0xff:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			fmt.Fprintf(&b, `\U%08x`, c)
		}
	}
	b.WriteRune(quote)
	return b.String()
}

// JSON is s as json.dumps writes a str: ASCII only, non-ASCII as
// \uXXXX (surrogate pairs beyond the BMP), short escapes for \n \r \t \b \f.
// s is read rune by rune: a byte that is not UTF-8 reads as U+FFFD.
func JSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || r > 0x7e:
			WriteUEscape(&b, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// WriteUEscape writes r as json.dumps escapes it: \uXXXX, a surrogate
// pair beyond the BMP.
func WriteUEscape(b *strings.Builder, r rune) {
	if r >= 0x10000 {
		r -= 0x10000
		fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		return
	}
	fmt.Fprintf(b, `\u%04x`, r)
}

// List is a Python list of strings as print and json.dumps write it, each
// item written by item (Repr or JSON): [a, b].
func List(items []string, item func(string) string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = item(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
