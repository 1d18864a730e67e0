package jsonenc

// The readers below take the plain forms of the JSON that orderly and
// nats-server write on the hot paths (a flat object of strings of
// printable ASCII, whole numbers, true and false) in place, without
// encoding/json's reflection; a caller hands anything else to
// encoding/json, so that both read the same.

// Space is the index of the first byte of b from i on that is not JSON
// white space (len(b) if there is none).
func Space(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// PlainString reads the JSON string at b[i]: its content and the index
// after it, when it is printable ASCII without escapes.
func PlainString(b []byte, i int) (content []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, i, false
		}
	}
	return nil, i, false
}

// PlainBool reads the JSON true or false at b[i]: the index after it, or
// -1 when there is neither.
func PlainBool(b []byte, i int) (next int) {
	for _, lit := range []string{"true", "false"} {
		if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
			return i + len(lit)
		}
	}
	return -1
}

// PlainUint reads the JSON number at b[i] when it is a whole number
// without sign, fraction or exponent that fits a uint64 (and has no
// leading zero, which JSON forbids): its value and the index after it.
func PlainUint(b []byte, i int) (n uint64, next int, ok bool) {
	j := i
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		d := uint64(b[j] - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, i, false
		}
		n = n*10 + d
	}
	if j == i || (b[i] == '0' && j-i > 1) {
		return 0, i, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, i, false
	}
	return n, j, true
}
