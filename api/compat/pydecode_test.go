package compat

import "testing"

// TestPyDecode: the cases are Python 3.11's b.decode("utf-8", "replace"),
// one U+FFFD per maximal subpart (truncated sequences, surrogates,
// overlongs, beyond U+10FFFF, stray continuation bytes).
func TestPyDecode(t *testing.T) {
	for in, want := range map[string]string{
		"\xff\xfe\x00\x00abc": "\uFFFD\uFFFD\x00\x00abc",
		"\xe2\x82a":           "\uFFFDa",
		"\xe2\x82":            "\uFFFD",
		"\xf0\x80\x80":        "\uFFFD\uFFFD\uFFFD",
		"\xf0\x90\x80":        "\uFFFD",
		"\xf0\x90\x80\x80":    "\U00010000",
		"\xed\xa0\x80x":       "\uFFFD\uFFFD\uFFFDx",
		"\xc0\xaf":            "\uFFFD\uFFFD",
		"\xe0\x80\xaf":        "\uFFFD\uFFFD\uFFFD",
		"ok\xf4\x90\x80\x80":  "ok\uFFFD\uFFFD\uFFFD\uFFFD",
		"\xf4\x8f\xbf":        "\uFFFD",
		"a\x80\x80b":          "a\uFFFD\uFFFDb",
		"\xc3":                "\uFFFD",
		"caf\xc3\xa9":         "café",
		"\xe2\x82\xac\xe2":    "€\uFFFD",
		"":                    "",
	} {
		if got := pyDecode(in); got != want {
			t.Errorf("pyDecode(%q) = %q, want %q", in, got, want)
		}
	}
}
