package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/orderly-run/orderly/api/client"
)

// The CLI reads the client package's wire types (client.Order,
// client.Result, client.Stream); --json output prints the API's bytes
// (their Raw) instead.

// commandLine renders the order's command as a shell would need it typed.
func commandLine(o *client.Order) string {
	parts := make([]string, 0, 1+len(o.Args))
	parts = append(parts, shellQuote(o.Command))
	for _, a := range o.Args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

// exitText is the EXIT column: the exit code, the signal, or "-".
func exitText(o *client.Order) string {
	if o.Result == nil {
		return "-"
	}
	if o.Result.Signal != nil && *o.Result.Signal != "" {
		return *o.Result.Signal
	}
	if o.Result.ExitCode != nil {
		return fmt.Sprint(*o.Result.ExitCode)
	}
	return "-"
}

// shellQuote quotes s for a POSIX shell. A string with a character that
// does not print (newline, carriage return, C1 controls, bidi overrides)
// is written in ANSI-C quotes, $'a\nb', as bash's printf %q does: the
// command line is another principal's text, and printed raw its newline
// forged rows in `orderly ls` and its carriage return or U+202E made it
// read as another command.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe, printable := true, true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r)) {
			safe = false
		}
		if !unicode.IsPrint(r) {
			printable = false
		}
	}
	switch {
	case safe:
		return s
	case printable:
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	b.WriteString("$'")
	writeEscaped(&b, s, true)
	b.WriteString("'")
	return b.String()
}

// writeEscaped writes s with every character that does not print as its
// escape, as bash's $'…' reads it; quoted also escapes the quote and the
// backslash, for inside $'…'.
func writeEscaped(b *strings.Builder, s string, quoted bool) {
	for _, r := range s {
		switch {
		case quoted && (r == '\\' || r == '\''):
			b.WriteString(`\` + string(r))
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			writeCodeEscape(b, r)
		}
	}
}

// writeCodeEscape writes r as its code point's escape, as bash's $'…'
// reads it: \xHH, \uHHHH or \UHHHHHHHH.
func writeCodeEscape(b *strings.Builder, r rune) {
	switch {
	case r < 0x80:
		fmt.Fprintf(b, `\x%02x`, r)
	case r <= 0xffff:
		fmt.Fprintf(b, `\u%04x`, r)
	default:
		fmt.Fprintf(b, `\U%08x`, r)
	}
}

// cellText is another party's text for one line of a table or a summary
// (a host id, a principal, a worker's version, an error): every character
// that does not print, newline and tab included, is written as its
// escape. A JWT's name, a worker's reported version and an order's error
// are not the reader's own text; printed raw, an escape sequence in them
// set the terminal's title, wrote its clipboard (OSC 52) or redrew the
// screen, and a newline forged a row.
func cellText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return s
	}
	var b strings.Builder
	writeEscaped(&b, s, false)
	return b.String()
}

// truncate shortens s to n runes with an ellipsis, for table cells.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func localTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// ago renders how long ago t was, coarsely, for the hosts table.
func ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	d := now.Sub(*t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// writeJSON prints an API answer indented, so --json output reads well and
// still parses.
func writeJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		buf.Reset()
		buf.Write(bytes.TrimSpace(raw))
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// writeValue prints v as indented JSON.
func writeValue(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeJSON(w, b)
}
