package compat

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPyUnmarshal: a key is a field only when spelled exactly as the field
// (json.loads and a dict lookup), unknown keys are ignored, an exact
// repeat keeps the last value, and a body that is not valid UTF-8 is
// refused instead of decoded with U+FFFD.
func TestPyUnmarshal(t *testing.T) {
	tests := []struct {
		name, body string
		args       string // the decoded args, "" when absent
		stdout     string
		wantErr    bool
	}{
		{"exact", `{"args":["a"]}`, `["a"]`, "", false},
		{"case only is not the field", `{"ARGS":["smuggled"]}`, "", "", false},
		{"case variant after the field", `{"args":["a"],"Args":["b"]}`, `["a"]`, "", false},
		{"case variant before the field", `{"Args":["b"],"args":["a"]}`, `["a"]`, "", false},
		{"exact repeat: the last wins", `{"args":["a"],"args":["b"]}`, `["b"]`, "", false},
		{"unknown key ignored", `{"argz":1,"args":[]}`, `[]`, "", false},
		{"nested object kept whole", `{"stdout":{"capture":true,"CAPTURE":false}}`, "", `{"capture":true,"CAPTURE":false}`, false},
		{"invalid UTF-8", "{\"args\":[\"a\xffb\"]}", "", "", true},
		{"lone surrogate", `{"args":["\ud800"]}`, "", "", true},
		{"not JSON", `{"args":`, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b *sampleBody
			err := pyUnmarshal([]byte(tt.body), &b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if string(b.Args) != tt.args || string(b.Stdout) != tt.stdout {
				t.Errorf("args %s stdout %s, want %s and %s", b.Args, b.Stdout, tt.args, tt.stdout)
			}
		})
	}
	// Inside a nested object decoded on its own, the same rule.
	var out struct {
		Capture *bool `json:"capture"`
	}
	if err := pyUnmarshal([]byte(`{"CAPTURE":true}`), &out); err != nil || out.Capture != nil {
		t.Errorf("CAPTURE: %v, capture %v; want it ignored", err, out.Capture)
	}
	var null *sampleBody
	if err := pyUnmarshal([]byte(`null`), &null); err != nil || null != nil {
		t.Errorf("null: %v %v", err, null)
	}
	// A type mismatch stays encoding/json's error: httpexec answers it 500.
	var typed struct {
		Capture *bool `json:"capture"`
	}
	var te *json.UnmarshalTypeError
	if err := pyUnmarshal([]byte(`{"capture":"yes"}`), &typed); !errors.As(err, &te) {
		t.Errorf("capture: \"yes\": %v, want an *json.UnmarshalTypeError", err)
	}
}

// TestPyUnmarshalIntDigits: every surface refuses, as json.loads did, an
// integer longer than 4300 digits.
// TestPyUnmarshalEncodings: json.loads, given the raw body by Flask's
// get_json, read UTF-8 with a BOM and UTF-16 or UTF-32 with or without
// one (the bodies are Python's own str.encode of the same JSON).
func TestPyUnmarshalEncodings(t *testing.T) {
	const want = "[\"a\u00e9\U0001F600\"]"
	for name, hexBody := range map[string]string{
		"utf-8-sig": "efbbbf7b2261726773223a5b2261c3a9f09f9880225d7d",
		"utf-16":    "fffe7b002200610072006700730022003a005b0022006100e9003dd800de22005d007d00",
		"utf-16-le": "7b002200610072006700730022003a005b0022006100e9003dd800de22005d007d00",
		"utf-16-be": "007b002200610072006700730022003a005b0022006100e9d83dde000022005d007d",
		"utf-32":    "fffe00007b0000002200000061000000720000006700000073000000220000003a0000005b0000002200000061000000e900000000f60100220000005d0000007d000000",
		"utf-32-be": "0000007b0000002200000061000000720000006700000073000000220000003a0000005b0000002200000061000000e90001f600000000220000005d0000007d",
	} {
		raw, err := hex.DecodeString(hexBody)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var b *sampleBody
		if err := pyUnmarshal(raw, &b); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var args []string
		if err := json.Unmarshal(b.Args, &args); err != nil || len(args) != 1 || args[0] != "a\u00e9\U0001F600" {
			t.Errorf("%s: args %s, want %s", name, b.Args, want)
		}
	}
	for name, raw := range map[string]string{
		"odd UTF-16":           "\xff\xfe{\x00}",
		"lone high surrogate":  "\xff\xfe{\x00\x3d\xd8}\x00",
		"UTF-32 past U+10FFFF": "\xff\xfe\x00\x00{\x00\x00\x00\x00\x00\x11\x00}\x00\x00\x00",
	} {
		var b *sampleBody
		if err := pyUnmarshal([]byte(raw), &b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPyUnmarshalIntDigits(t *testing.T) {
	var b *sampleBody
	if err := pyUnmarshal([]byte(`{"args":["a"],"x":1`+strings.Repeat("0", 4300)+`}`), &b); !errors.Is(err, errIntTooLong) {
		t.Errorf("a 4301-digit integer: %v", err)
	}
}

// sampleBody is a request body of the shape the surfaces read.
type sampleBody struct {
	Args   json.RawMessage `json:"args"`
	Stdout json.RawMessage `json:"stdout"`
}

// TestPyLoadsTruthy: bool() of what json.loads made, numbers included at
// any size (1e400 is inf, 1e-400 is 0.0).
func TestPyLoadsTruthy(t *testing.T) {
	for raw, want := range map[string]bool{
		`0`: false, `-0`: false, `0.0`: false, `-0e5`: false, `0E+2`: false, `1`: true, `0.001`: true, `1e400`: true,
		`1e-400`: false, `-1e-400`: false, `""`: false, `"false"`: true, `[]`: false, `[0]`: true, `{}`: false, `{"a":0}`: true,
		`null`: false, `false`: false, `true`: true,
	} {
		v, err := pyLoads([]byte(raw))
		if err != nil || pyTruthy(v) != want {
			t.Errorf("%s: %v %v, want %v", raw, pyTruthy(v), err, want)
		}
	}
	if _, err := pyLoads([]byte(`{} {}`)); err == nil {
		t.Errorf("two values read as one")
	}
}

// TestPyASCII: json.dumps's ensure_ascii, as Python 3.11 writes
// json.dumps({"m": "é€😀\x7f<&>"}).
func TestPyASCII(t *testing.T) {
	b, _ := json.Marshal(map[string]string{"m": "é€😀\x7f<&>"})
	got := pyASCII(strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(b)))
	if want := `{"m":"\u00e9\u20ac\ud83d\ude00\u007f<&>"}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestPyJSONAround: an answer written as pyJSONAround's head, its long
// value's pieces through pyJSONText and its tail is writePyJSON's answer,
// byte for byte, wherever the pieces are cut between characters.
func TestPyJSONAround(t *testing.T) {
	pieces := []string{"# Runbook <a & b>\n", "é \u2028 \x7f \U0001F600", "\n### 2025 | Exit Code: 0\n\"quoted\" \\ \t\x01", ""}
	for _, v := range []map[string]any{
		{"success": true, "filename": "Ünï.md", "name": "x <y>", "content": strings.Join(pieces, "")},
		{"content": strings.Join(pieces, ""), "a": 1},
	} {
		text := v["content"]
		v["content"] = ""
		head, tail := pyJSONAround(v, "content")
		var b strings.Builder
		b.WriteString(head)
		for _, p := range pieces {
			_ = writePyJSONText(&b, p)
		}
		// Longer than one slice, cut inside characters and bad bytes.
		long := strings.Repeat("aé\U0001F600\xe2\x82", 20000)
		_ = writePyJSONText(&b, long)
		got := b.String() + tail
		v["content"] = text.(string) + long
		rec := httptest.NewRecorder()
		writePyJSON(rec, 200, v)
		if want := rec.Body.String(); got != want {
			t.Errorf("pieces give\n%.300q\nwant\n%.300q", got, want)
		}
	}
}
