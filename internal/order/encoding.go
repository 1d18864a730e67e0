package order

import (
	"bytes"
	"encoding/ascii85"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// Encoding says how bytes travel inside JSON: as text (""), base64 or
// Ascii85 ("base85", exactly as Python's base64.a85encode: no <~ ~>
// delimiters, "z" for a group of four zero bytes).
type Encoding string

// The encodings a stream may use.
const (
	EncodeText   Encoding = ""
	EncodeBase64 Encoding = "base64"
	EncodeBase85 Encoding = "base85"
)

// ParseEncoding accepts the wire spelling of an encoding.
func ParseEncoding(s string) (Encoding, error) {
	switch Encoding(s) {
	case EncodeText, EncodeBase64, EncodeBase85:
		return Encoding(s), nil
	}
	return "", fmt.Errorf("unknown encoding %q (want null, \"base64\" or \"base85\")", s)
}

// Encode renders b in encoding e. For EncodeText it returns the bytes as a
// string when they are text: valid UTF-8 without NUL. Otherwise it switches
// to base64 and says so in the returned encoding, so no byte is ever
// replaced or dropped. NUL is valid UTF-8 but never text, and JSON would
// spell each one as six bytes (\u0000).
func Encode(b []byte, e Encoding) (string, Encoding) {
	switch e {
	case EncodeBase64:
		return base64.StdEncoding.EncodeToString(b), EncodeBase64
	case EncodeBase85:
		return encodeA85(b), EncodeBase85
	}
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return string(b), EncodeText
	}
	return base64.StdEncoding.EncodeToString(b), EncodeBase64
}

// Decode parses s written in encoding e.
func Decode(s string, e Encoding) ([]byte, error) {
	switch e {
	case EncodeBase64:
		return base64.StdEncoding.DecodeString(s)
	case EncodeBase85:
		return decodeA85(s)
	}
	return []byte(s), nil
}

// encodeA85 is Python's a85encode with its defaults. Go's encoder already
// uses "z" for full zero groups and emits n+1 characters for a final partial
// group, which is what Python does with pad=False.
func encodeA85(b []byte) string {
	dst := make([]byte, ascii85.MaxEncodedLen(len(b)))
	n := ascii85.Encode(dst, b)
	return string(dst[:n])
}

// decodeA85 is Python's a85decode with its defaults, digit for digit: the
// whitespace it ignores is " \t\n\r\v" only, "z" stands for four zero
// bytes between groups, a group worth more than 32 bits is an error (Go's
// decoder wraps it round to other bytes), and a final group of n digits
// is padded with "u" and gives n-1 bytes (none for one digit). <~ ~> are
// not expected.
func decodeA85(s string) ([]byte, error) {
	out := make([]byte, 0, len(s)/5*4+4)
	var group []byte // the digits of the current group, 0-84
	value := func() (uint32, error) {
		var v uint64
		for _, d := range group {
			v = 85*v + uint64(d)
		}
		if v > math.MaxUint32 {
			return 0, errors.New("Ascii85 overflow")
		}
		return uint32(v), nil
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '!' <= c && c <= 'u':
			if group = append(group, c-'!'); len(group) == 5 {
				v, err := value()
				if err != nil {
					return nil, err
				}
				out, group = binary.BigEndian.AppendUint32(out, v), group[:0]
			}
		case c == 'z':
			if len(group) > 0 {
				return nil, errors.New("z inside Ascii85 5-tuple")
			}
			out = append(out, 0, 0, 0, 0)
		case strings.IndexByte(" \t\n\r\v", c) >= 0:
		default:
			return nil, fmt.Errorf("non-Ascii85 digit at offset %d", i)
		}
	}
	if n := len(group); n > 0 {
		for len(group) < 5 {
			group = append(group, 'u'-'!')
		}
		v, err := value()
		if err != nil {
			return nil, err
		}
		out = append(out, binary.BigEndian.AppendUint32(nil, v)[:n-1]...)
	}
	return out, nil
}
