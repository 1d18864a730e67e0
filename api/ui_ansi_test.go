package api

import (
	"strings"
	"testing"
)

// TestANSIHTML: output is always escaped; SGR colours become spans with
// classes from the fixed list; every other escape sequence is dropped.
func TestANSIHTML(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain", "plain"},
		{"<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"},
		{`a "quoted" & 'single'`, "a &#34;quoted&#34; &amp; &#39;single&#39;"},
		{"\x1b[31mred\x1b[0m done", `<span class="ansi-fg1">red</span> done`},
		{"\x1b[1;32mok\x1b[m", `<span class="ansi-bold ansi-fg2">ok</span>`},
		{"\x1b[94;41mx\x1b[39my\x1b[0m", `<span class="ansi-fg12 ansi-bg1">x</span><span class="ansi-bg1">y</span>`},
		{"\x1b[38;5;196mx\x1b[0m", "x"},
		{"\x1b[2Kclear\x1b[1A", "clear"},
		{"\x1b]0;title\x07text", "text"},
		{"\x1b]8;;javascript:alert(1)\x1b\\link\x1b]8;;\x1b\\ after", "link after"},
		{"\x1b(Bcharset \x1bcreset \x1b=keypad", "charset reset keypad"},
		{"\x1bPdevice control\x1b\\x", "x"},
		{"\x1b]unterminated title", ""},
		{"\x1b[31m<b>\x1b[0m", `<span class="ansi-fg1">&lt;b&gt;</span>`},
		{"\x1b[31;\"><img src=x>m", "&lt;img src=x&gt;m"},
		{"unterminated \x1b[31", "unterminated "},
		{"\x1b[31mstill open", `<span class="ansi-fg1">still open</span>`},
		// Bidi controls would show "abcexe.pdf": shown as escapes.
		{"abc\u202efdp.exe", `abc<span class="ctl">\u202e</span>fdp.exe`},
		{"\x1b[31m\u2067<x>\u2069\x1b[0m", `<span class="ansi-fg1"><span class="ctl">\u2067</span>&lt;x&gt;<span class="ctl">\u2069</span></span>`},
		{"\u05e9\u05dc\u05d5\u05dd \u200f", "\u05e9\u05dc\u05d5\u05dd \u200f"}, // text and marks stay
	} {
		got := string(ansiHTML(c.in))
		if got != c.want {
			t.Errorf("ansiHTML(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.ContainsRune(got, 0x1b) || strings.ContainsFunc(got, isBidiControl) {
			t.Errorf("ansiHTML(%q) kept an escape character or a bidi control", c.in)
		}
	}
}

// TestOutputViewHeadAndTail: a stream over uiShowBytes shows its head
// and tail only, cut on character boundaries; binary output is a
// download only.
func TestOutputViewHeadAndTail(t *testing.T) {
	big := strings.Repeat("é", uiShowBytes) // two bytes each
	p, ok := outputView("stdout", Stream{Content: big})
	if !ok || p.Omitted == 0 || len(p.HTML)+len(p.Tail)+p.Omitted != len(big) {
		t.Fatalf("head %d tail %d omitted %d of %d", len(p.HTML), len(p.Tail), p.Omitted, len(big))
	}
	if strings.ContainsRune(string(p.HTML)+string(p.Tail), '\uFFFD') {
		t.Fatal("a character was cut in half")
	}
	small, _ := outputView("stdout", Stream{Content: "hi\n"})
	if small.Omitted != 0 || string(small.HTML) != "hi\n" {
		t.Fatalf("small output: %+v", small)
	}
	enc := "base64"
	if _, ok := outputView("stdout", Stream{Content: "AAEC", Encode: &enc}); ok {
		t.Fatal("binary output rendered")
	}
}
