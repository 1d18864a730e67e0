package compat

import "testing"

// TestPyStrip: Python's str.strip() also strips U+001C to U+001F
// (str.isspace() finds them white), which strings.TrimSpace keeps: Vigrid
// ran "echo\x1f" as echo, where orderly looked for a command named
// "echo\x1f" (404), and stage0 read roles "ops,\x1cdev" as ops and dev.
func TestPyStrip(t *testing.T) {
	for in, want := range map[string]string{
		" echo\t\n":              "echo",
		"\x1cecho\x1d\x1e\x1f":   "echo",
		"\u00a0\u3000echo\u2028": "echo",
		"\u0085echo\x0b\x0c\r":   "echo",
		"ec\x1fho":               "ec\x1fho",
		"\x1becho":               "\x1becho",   // ESC is not white space
		"\u200becho":             "\u200becho", // nor is a zero-width space
	} {
		if got := pyStrip(in); got != want {
			t.Errorf("pyStrip(%q) = %q, want %q", in, got, want)
		}
	}
	if got := stage0Roles("ops,\x1cdev ,\x1f"); len(got) != 2 || got[0] != "ops" || got[1] != "dev" {
		t.Errorf(`roles "ops,\x1cdev ,\x1f" = %q, want [ops dev]`, got)
	}
}
