package order

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
)

// TestAscii85MatchesPython checks vectors produced by Python 3.11's
// base64.a85encode (defaults: no <~ ~>, "z" for zero groups, no padding).
func TestAscii85MatchesPython(t *testing.T) {
	cases := []struct{ hex, want string }{
		{"", ""},
		{"68", "BE"},
		{"68656c6c6f", "BOu!rDZ"},
		{"00000000", "z"},
		{"0000000000", "z!!"},
		{"4d616e2069732064697374696e67756973686564", "9jqo^BlbD-BleB1DJ+*+F(f,q"},
		{"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627", `!!*-'"9eu7#RLhG$k3[W&.oNg'GVB"(` + "`" + `=52*$$(B+<_pR,UFcb`},
		{"ffffffff", "s8W-!"},
		{"0000000061626300000000", "z@:E^H!!!!"},
	}
	for _, c := range cases {
		b, _ := hex.DecodeString(c.hex)
		got, enc := Encode(b, EncodeBase85)
		if got != c.want || enc != EncodeBase85 {
			t.Errorf("Encode(%s) = %q, want %q", c.hex, got, c.want)
		}
		back, err := Decode(c.want, EncodeBase85)
		if err != nil || !bytes.Equal(back, b) {
			t.Errorf("Decode(%q) = %x, %v; want %s", c.want, back, err, c.hex)
		}
	}
}

// TestAscii85DecodeMatchesPython checks what Python 3.11's a85decode (its
// defaults) made of input a85encode never writes: a short final group,
// whitespace, and the input it refused (a group past 32 bits, which Go's
// decoder wraps round to other bytes; other control characters).
func TestAscii85DecodeMatchesPython(t *testing.T) {
	for _, c := range []struct {
		in, hex string
		ok      bool
	}{
		{"a", "", true},
		{"ab", "c9", true},
		{"z@:K6\v ", "000000006162ff", true},
		{"9jqo^ BlbD-\nBleB1\tDJ+*+F(f,q\r", "4d616e2069732064697374696e67756973686564", true},
		{"s8", "", false},
		{"s8W-", "", false},
		{`s8W-"`, "", false},
		{"uuuuu", "", false},
		{"ab\f", "", false},
		{"ab\x00", "", false},
		{"abz", "", false},
		{"<~z~>", "", false},
		{"é", "", false},
	} {
		got, err := Decode(c.in, EncodeBase85)
		if c.ok && (err != nil || hex.EncodeToString(got) != c.hex) {
			t.Errorf("Decode(%q) = %x, %v; want %s", c.in, got, err, c.hex)
		}
		if !c.ok && err == nil {
			t.Errorf("Decode(%q) = %x; Python refused it", c.in, got)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 1000, 4099} {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		for _, e := range []Encoding{EncodeBase64, EncodeBase85} {
			s, got := Encode(b, e)
			if got != e {
				t.Fatalf("encoding switched from %s to %s", e, got)
			}
			back, err := Decode(s, e)
			if err != nil || !bytes.Equal(back, b) {
				t.Fatalf("%s round trip of %d bytes failed: %v", e, n, err)
			}
		}
	}
}

func TestTextSwitchesToBase64ForInvalidUTF8(t *testing.T) {
	s, e := Encode([]byte("héllo\n"), EncodeText)
	if e != EncodeText || s != "héllo\n" {
		t.Fatalf("valid UTF-8: %q %s", s, e)
	}
	if _, e := Encode([]byte("a\x00b"), EncodeText); e != EncodeBase64 {
		t.Fatalf("text with NUL kept as %s", e)
	}
	raw := []byte{0xff, 0xfe, 'a', 0}
	s, e = Encode(raw, EncodeText)
	if e != EncodeBase64 {
		t.Fatalf("invalid UTF-8 kept as %s", e)
	}
	back, _ := Decode(s, e)
	if !bytes.Equal(back, raw) {
		t.Fatal("bytes lost")
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	if _, err := Decode("not base64!", EncodeBase64); err == nil {
		t.Error("base64 garbage accepted")
	}
	if _, err := Decode("abc~>xyz{", EncodeBase85); err == nil {
		t.Error("ascii85 garbage accepted")
	}
	if _, err := ParseEncoding("rot13"); err == nil {
		t.Error("unknown encoding accepted")
	}
}

func TestValidateDefaultsAndLimits(t *testing.T) {
	l := DefaultLimits()
	o := &Order{Host: "h", Command: "true"}
	if err := Validate(o, l); err != nil || o.Timeout != l.DefaultTimeout || o.Kind != KindExec {
		t.Fatalf("valid order: %v %+v", err, o)
	}
	bad := []*Order{
		{Host: "a.b", Command: "x"},
		{Host: "h", Command: ""},
		{Host: "h", Command: "a\x00b"},
		{Host: "h", Command: "x", Args: []string{"\x00"}},
		{Host: "h", Command: "x", Env: map[string]string{"1A": "x"}},
		{Host: "h", Command: "x", RunAs: "root;id"},
		{Host: "h", Command: "x", Timeout: -1},
		{Host: "h", Command: "x", Timeout: l.MaxTimeout + 1},
		{Host: "h", Command: "x", Args: make([]string, l.MaxArgs+1)},
		{Host: "h", Command: "x", Stdin: make([]byte, l.MaxStdinBytes+1)},
	}
	for i, o := range bad {
		if err := Validate(o, l); err == nil {
			t.Errorf("case %d accepted: %+v", i, o)
		} else if ErrorCode(err) == CodeInternal {
			t.Errorf("case %d: error without a code: %v", i, err)
		}
	}
	// Several bad variables: the same one is reported every time.
	o = &Order{Host: "h", Command: "x", Env: map[string]string{"Z": strings.Repeat("z", l.MaxEnvBytes+1), "B": "\x00", "9": "", "D": "\x01"}}
	for range 20 {
		if err := Validate(o, l); err == nil || !strings.Contains(err.Error(), `name "9"`) {
			t.Fatalf("several bad variables: %v, want the first by name (9)", err)
		}
	}
}

func TestScreen(t *testing.T) {
	deny := []string{"LD_*", "PATH", "BASH_FUNC_*"}
	cases := []struct {
		o    Order
		code Code
	}{
		{Order{Command: "ls", Env: map[string]string{"FOO": "1"}}, ""},
		{Order{Command: "ls", Env: map[string]string{"LD_PRELOAD": "x"}}, CodeForbidden},
		{Order{Command: "ls", Env: map[string]string{"ld_library_path": "x"}}, CodeForbidden},
		{Order{Command: "ls", Env: map[string]string{"Path": "x"}}, CodeForbidden},
		{Order{Command: "ls", Env: map[string]string{"PATHS": "x"}}, ""},
		{Order{Command: "ls", Args: []string{"a;b"}}, CodeInvalid},
		{Order{Command: "l$s"}, CodeInvalid},
		{Order{Command: "ls", Args: []string{"plain", "-la"}}, ""},
		// A runbook's file name is no command a shell sees (the workers
		// do not screen it): "Backup & restore.md" runs.
		{Order{Kind: KindScript, Command: "runbook:Backup & restore (daily).md"}, ""},
		{Order{Kind: KindScript, Command: "runbook:a.md", Env: map[string]string{"LD_PRELOAD": "x"}}, CodeForbidden},
	}
	for i, c := range cases {
		err := Screen(&c.o, deny, nil, ";&|`$()<>\\\"'")
		if c.code == "" && err != nil || c.code != "" && ErrorCode(err) != c.code {
			t.Errorf("case %d: %v, want code %q", i, err, c.code)
		}
	}
	if err := Screen(&Order{Command: "a;b"}, nil, nil, ""); err != nil {
		t.Errorf("no forbidden set: %v", err)
	}
	// Several refused names: the same one is reported every time.
	o := &Order{Command: "ls", Env: map[string]string{"PATH": "x", "LD_PRELOAD": "y", "BASH_FUNC_x": "z", "ld_audit": "w"}}
	for range 20 {
		if err := Screen(o, deny, nil, ""); err == nil || !strings.Contains(err.Error(), "BASH_FUNC_x may not be set") {
			t.Fatalf("several refused names: %v, want the first by name (BASH_FUNC_x)", err)
		}
	}
}

// TestScreenCutsALongName: a refused name is named cut to 64 bytes, as an
// invalid one is; a 100 000-byte name came back whole in the 403 and the
// rejections row.
func TestScreenCutsALongName(t *testing.T) {
	long := "LD_" + strings.Repeat("X", 100_000)
	for _, c := range []struct{ deny, allow []string }{{[]string{"LD_*"}, nil}, {nil, []string{"PATH"}}} {
		err := Screen(&Order{Command: "ls", Env: map[string]string{long: "v"}}, c.deny, c.allow, "")
		if ErrorCode(err) != CodeForbidden || len(err.Error()) > 200 || !strings.Contains(err.Error(), "LD_XXX") {
			t.Errorf("deny %v allow %v: %d bytes: %.200s", c.deny, c.allow, len(err.Error()), err)
		}
	}
}
