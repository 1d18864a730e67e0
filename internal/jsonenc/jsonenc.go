// Package jsonenc appends JSON text exactly as encoding/json writes it,
// without its reflection: for the few hot encodes (an answer's processes,
// an order's events) whose bytes readers compare with encoding/json's;
// and reads the plain forms of the few hot decodes (an order's event in
// the API's hub, a publish's PubAck) in place (plain.go). It imports
// nothing of ours, so the API and the queue share it.
package jsonenc

import "unicode/utf8"

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string with encoding/json's escapes:
// \" \\ \b \f \n \r \t, \u00XX for the other bytes below 0x20, \u2028 and
// \u2029 always, \ufffd for each byte that is not part of valid UTF-8,
// and, when escapeHTML is set (json.Marshal's default; encode turns it
// off), \u003c, \u003e and \u0026 for <, > and &.
func AppendString(dst []byte, s string, escapeHTML bool) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || c != '<' && c != '>' && c != '&') {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(append(dst, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(append(dst, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(dst, s[start:]...), '"')
}
