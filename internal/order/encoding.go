package order

import (
	"bytes"
	"encoding/ascii85"
	"encoding/base64"
	"fmt"
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

// decodeA85 is Python's a85decode with its defaults: whitespace is ignored,
// "z" stands for four zero bytes, and <~ ~> are not expected.
func decodeA85(s string) ([]byte, error) {
	src := []byte(s)
	dst := make([]byte, 4*len(src)+4)
	ndst, nsrc, err := ascii85.Decode(dst, src, true)
	if err != nil {
		return nil, err
	}
	if nsrc != len(src) && len(bytes.TrimSpace(src[nsrc:])) != 0 {
		return nil, fmt.Errorf("trailing data at offset %d", nsrc)
	}
	return dst[:ndst], nil
}
