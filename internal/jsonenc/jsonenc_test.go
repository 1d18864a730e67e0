package jsonenc

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"testing/quick"
)

// marshalString is s as encoding/json writes it: by json.Marshal (HTML
// escapes) or by an Encoder with SetEscapeHTML(false).
func marshalString(t testing.TB, s string, escapeHTML bool) []byte {
	t.Helper()
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(escapeHTML)
	if err := e.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// stringCases are the texts encoding/json treats apart: every byte below
// 0x80, HTML's three, U+2028 and U+2029 among other runes, and bytes that
// are not UTF-8 (alone, cut runes, surrogates, overlong forms, past
// U+10FFFF), at the start, the middle and the end.
func stringCases() []string {
	var ascii strings.Builder
	for c := range 0x80 {
		ascii.WriteByte(byte(c))
	}
	cases := []string{
		"", "started", "succeeded", "web-1.example.org",
		ascii.String(),
		`<script>alert("x")</script> & more`,
		"a\u2028b\u2029c", "\u2028", "\u2029\u2029", "\u2027\u202a", // the neighbours pass
		"é€😀", "\u00a0\u200b\ufeff\ufffd",
		"\xff", "a\xffb", "\xe2\x80", "x\xe2\x80", "\xe2\x80\xa8\xe2", // a cut U+2028 after a whole one
		"\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "\x80\x80", "\xf0\x9f\x98",
		"err: exit status 1\n\tat line 2\r\n\x00\x1f\x7f",
		strings.Repeat("a<b>&\"\\", 100),
	}
	for c := range 0x100 {
		cases = append(cases, string([]byte{byte(c)}), "x"+string([]byte{byte(c)})+"y")
	}
	return cases
}

// TestAppendStringAsEncodingJSON: AppendString writes every case as
// encoding/json does, byte for byte, with and without HTML escapes, after
// what dst already holds.
func TestAppendStringAsEncodingJSON(t *testing.T) {
	for _, s := range stringCases() {
		for _, html := range []bool{true, false} {
			want := marshalString(t, s, html)
			got := AppendString([]byte("prefix"), s, html)
			if !bytes.Equal(got, append([]byte("prefix"), want...)) {
				t.Errorf("%q (HTML escapes %v):\n got %s\nwant prefix%s", s, html, got, want)
			}
		}
	}
}

// TestAppendStringQuick: the same for testing/quick's random strings.
func TestAppendStringQuick(t *testing.T) {
	same := func(s string, raw []byte, html bool) bool {
		return bytes.Equal(AppendString(nil, s, html), marshalString(t, s, html)) &&
			bytes.Equal(AppendString(nil, string(raw), html), marshalString(t, string(raw), html))
	}
	if err := quick.Check(same, &quick.Config{MaxCount: 5000}); err != nil {
		t.Fatal(err)
	}
}

// FuzzAppendString: the same for any string; the seed corpus (run by go
// test) is stringCases.
func FuzzAppendString(f *testing.F) {
	for _, s := range stringCases() {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, html bool) {
		if got, want := AppendString(nil, s, html), marshalString(t, s, html); !bytes.Equal(got, want) {
			t.Fatalf("%q (HTML escapes %v):\n got %s\nwant %s", s, html, got, want)
		}
	})
}

// TestAppendStringAllocations: into a buffer large enough, nothing.
func TestAppendStringAllocations(t *testing.T) {
	buf := make([]byte, 0, 256)
	s := "a<b>\"c\"\n\xff\u2028é"
	if n := testing.AllocsPerRun(100, func() { buf = AppendString(buf[:0], s, true) }); n != 0 {
		t.Fatalf("%.0f allocations, want none", n)
	}
}
