package api

import (
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ansiHTML renders terminal output as HTML: every byte of text is escaped,
// and ANSI SGR colour sequences become <span class="…"> with classes from
// a fixed list, so output can colour the page but never put markup,
// attributes or links in it. Other escape sequences are dropped, and
// bidi controls are shown as escapes (writeText).
func ansiHTML(text string) template.HTML {
	var b strings.Builder
	var classes []string
	open := false
	flush := func() {
		if open {
			b.WriteString("</span>")
			open = false
		}
		if len(classes) > 0 {
			b.WriteString(`<span class="` + strings.Join(classes, " ") + `">`)
			open = true
		}
	}
	for i := 0; i < len(text); {
		c := text[i]
		if c != 0x1b {
			j := strings.IndexByte(text[i:], 0x1b)
			if j < 0 {
				j = len(text) - i
			}
			writeText(&b, text[i:i+j])
			i += j
			continue
		}
		// ESC [ params final
		if i+1 < len(text) && text[i+1] == '[' {
			j := i + 2
			for j < len(text) && (text[j] >= 0x30 && text[j] <= 0x3f) {
				j++
			}
			for j < len(text) && text[j] >= 0x20 && text[j] <= 0x2f {
				j++
			}
			if j < len(text) {
				if text[j] == 'm' {
					classes = sgrClasses(classes, text[i+2:j])
					flush()
				}
				i = j + 1
				continue
			}
			i = len(text)
			continue
		}
		i = skipEscape(text, i)
	}
	if open {
		b.WriteString("</span>")
	}
	return template.HTML(b.String()) //nolint:gosec // built from escaped text and fixed class names only
}

// isBidiControl reports the characters that reorder the text after
// them (embeddings, overrides and isolates, U+202A–U+202E and
// U+2066–U+2069): "abc\u202efdp.exe" shows as "abcexe.pdf". A terminal
// shows text in the order it was printed; the page does too.
func isBidiControl(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// writeText writes s escaped, each bidi control as its escape
// ("\u202e") in a span of class ctl instead of the character itself.
func writeText(b *strings.Builder, s string) {
	for s != "" {
		k := strings.IndexFunc(s, isBidiControl)
		if k < 0 {
			b.WriteString(template.HTMLEscapeString(s))
			return
		}
		b.WriteString(template.HTMLEscapeString(s[:k]))
		r, n := utf8.DecodeRuneInString(s[k:])
		fmt.Fprintf(b, `<span class="ctl">\u%04x</span>`, r)
		s = s[k+n:]
	}
}

// bidiEscaped is s with each bidi control as its escape, for plain text
// (a page's title).
func bidiEscaped(s string) string {
	var b strings.Builder
	for _, r := range s {
		if isBidiControl(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// skipEscape returns where the escape sequence at text[i] (an ESC that
// does not start a CSI) ends: a string sequence (OSC titles and links,
// DCS, SOS, PM, APC) runs to its BEL or ST (ESC \\) or to the end, an
// escape with intermediate bytes to its final byte; a lone ESC is one
// byte.
func skipEscape(text string, i int) int {
	j := i + 1
	if j < len(text) && strings.IndexByte("]PX^_", text[j]) >= 0 {
		for j++; j < len(text); j++ {
			if text[j] == 0x07 {
				return j + 1
			}
			if text[j] == 0x1b {
				if j+1 < len(text) && text[j+1] == '\\' {
					return j + 2
				}
				return j // an ESC ends it too, and starts what follows
			}
		}
		return j
	}
	for j < len(text) && text[j] >= 0x20 && text[j] <= 0x2f {
		j++
	}
	if j < len(text) && text[j] >= 0x30 && text[j] <= 0x7e {
		return j + 1
	}
	return i + 1
}

// sgrClasses applies one SGR parameter list to the current classes.
func sgrClasses(cur []string, params string) []string {
	if params == "" {
		return nil
	}
	keep := func(prefix string) []string {
		out := cur[:0:0]
		for _, c := range cur {
			if !strings.HasPrefix(c, prefix) {
				out = append(out, c)
			}
		}
		return out
	}
	parts := strings.Split(params, ";")
	for k := 0; k < len(parts); k++ {
		n, err := strconv.Atoi(parts[k])
		if err != nil {
			continue
		}
		switch {
		case n == 0:
			cur = nil
		case n == 1:
			cur = append(keep("ansi-bold"), "ansi-bold")
		case n == 3:
			cur = append(keep("ansi-italic"), "ansi-italic")
		case n == 4:
			cur = append(keep("ansi-underline"), "ansi-underline")
		case n == 22:
			cur = keep("ansi-bold")
		case n == 23:
			cur = keep("ansi-italic")
		case n == 24:
			cur = keep("ansi-underline")
		case n >= 30 && n <= 37:
			cur = append(keep("ansi-fg"), "ansi-fg"+strconv.Itoa(n-30))
		case n >= 90 && n <= 97:
			cur = append(keep("ansi-fg"), "ansi-fg"+strconv.Itoa(n-90+8))
		case n == 39:
			cur = keep("ansi-fg")
		case n >= 40 && n <= 47:
			cur = append(keep("ansi-bg"), "ansi-bg"+strconv.Itoa(n-40))
		case n >= 100 && n <= 107:
			cur = append(keep("ansi-bg"), "ansi-bg"+strconv.Itoa(n-100+8))
		case n == 49:
			cur = keep("ansi-bg")
		case n == 38 || n == 48:
			// 256-colour and RGB forms: skip their arguments.
			if k+1 < len(parts) && parts[k+1] == "5" {
				k += 2
			} else if k+1 < len(parts) && parts[k+1] == "2" {
				k += 4
			}
		}
	}
	return cur
}
