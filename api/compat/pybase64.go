package compat

import (
	"errors"
	"strings"
)

// pyB64Decode is Python's base64.b64decode(s) as httpexec called it, not
// validating (CPython's binascii.a2b_base64 with strict_mode off):
// characters outside the alphabet are skipped, a pad ends the data once
// it completes a quad ("aGVs bG8=" and "aGVs=bG8=" are "hello"), and only a
// last quad left short is an error. Go's decoder refused what httpexec
// ran.
func pyB64Decode(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return nil, errors.New("string argument should contain only ASCII characters")
		}
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	out := make([]byte, 0, len(s)*3/4)
	quad, pads := 0, 0
	var left byte
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			if quad >= 2 {
				if pads++; quad+pads >= 4 {
					return out, nil
				}
			}
			continue
		}
		v := strings.IndexByte(alphabet, s[i])
		if v < 0 {
			continue
		}
		c := byte(v)
		pads = 0
		switch quad {
		case 0:
			left = c
		case 1:
			out = append(out, left<<2|c>>4)
			left = c & 0x0f
		case 2:
			out = append(out, left<<4|c>>2)
			left = c & 0x03
		case 3:
			out = append(out, left<<6|c)
		}
		quad = (quad + 1) % 4
	}
	switch quad {
	case 0:
		return out, nil
	case 1:
		return nil, errors.New("invalid base64-encoded string: one character more than a multiple of 4")
	}
	return nil, errors.New("incorrect padding")
}
