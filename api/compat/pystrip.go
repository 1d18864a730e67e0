package compat

import (
	"strings"
	"unicode"
)

// pyStrip is Python's str.strip() with no argument, which is how Vigrid
// trimmed the command and stage0 each role of a comma-separated roles
// claim: it strips what str.isspace() finds white, which is
// strings.TrimSpace's set plus the ASCII separators U+001C to U+001F.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f })
}
