package api

import (
	"html/template"
	"strconv"
	"strings"
)

// ansiHTML renders terminal output as HTML: every byte of text is escaped,
// and ANSI SGR colour sequences become <span class="…"> with classes from
// a fixed list, so output can colour the page but never put markup,
// attributes or links in it. Other escape sequences are dropped.
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
			b.WriteString(template.HTMLEscapeString(text[i : i+j]))
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
