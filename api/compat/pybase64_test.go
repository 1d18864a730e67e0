package compat

import "testing"

// TestPyB64Decode: the cases are Python 3.11's base64.b64decode(s).
func TestPyB64Decode(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"aGVsbG8=", "hello", false},
		{"aGVs bG8=", "hello", false},
		{"aGVs=bG8=", "hello", false},
		{"aGVsbG8===", "hello", false},
		{"aGVsbG8=x", "hello", false},
		{"!!", "", false},
		{"abc=", "i\xb7", false},
		{"ab==cd", "i", false},
		{"", "", false},
		{"aGVsbG8", "", true},
		{"a", "", true},
		{"ab", "", true},
		{"é", "", true},
	} {
		got, err := pyB64Decode(tc.in)
		if (err != nil) != tc.err || string(got) != tc.want {
			t.Errorf("%q: %q %v, want %q (error %t)", tc.in, got, err, tc.want, tc.err)
		}
	}
}
