package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
)

// TestLargeOutputsAnswerFromTheDatabase: an order with more than 64 KiB of
// kept output, answered after ?wait and by GET /v1/orders/{id} (both read
// it leaving the outputs in the database and stream them in slices), has
// exactly the bytes the process printed: text with multi-byte runes as
// text, NUL bytes switched to base64; and both answers are the same bytes.
func TestLargeOutputsAnswerFromTheDatabase(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"big"}})
	line := "out é€😀 \"quoted\" \\ <tag>\n" // escapes and 2-4 byte runes
	text := strings.Repeat(line, 300<<10/len(line))
	cases := []struct {
		name, script string
		stdout       []byte
		encode       string
	}{
		{"text", `i=0; while [ $i -lt ` + strconv.Itoa(300<<10/len(line)) + ` ]; do printf '%s' "$1"; i=$((i+1)); done; echo warn >&2`,
			[]byte(text), ""},
		{"NUL switches to base64", `head -c 200000 /dev/zero`, make([]byte, 200000), "base64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, waited := e.do("alice", "POST", "/v1/orders?wait=30",
				map[string]any{"host": "big", "command": "sh", "args": []string{"-c", c.script, "sh", line}})
			if code != http.StatusOK {
				t.Fatalf("POST ?wait = %d: %.300s", code, waited)
			}
			var o api.Order
			if err := json.Unmarshal(waited, &o); err != nil {
				t.Fatalf("decode the answer: %v", err)
			}
			code, got := e.do("alice", "GET", "/v1/orders/"+o.ID.String(), nil)
			if code != http.StatusOK || !bytes.Equal(got, waited) {
				t.Fatalf("GET = %d, %d bytes; the ?wait answer had %d", code, len(got), len(waited))
			}
			out := []byte(o.Result.Stdout.Content)
			enc := ""
			if o.Result.Stdout.Encode != nil {
				enc = *o.Result.Stdout.Encode
				var err error
				if out, err = base64.StdEncoding.DecodeString(o.Result.Stdout.Content); err != nil {
					t.Fatal(err)
				}
			}
			if enc != c.encode || !bytes.Equal(out, c.stdout) {
				t.Fatalf("stdout in %q: %d bytes, want %d in %q", enc, len(out), len(c.stdout), c.encode)
			}
			if c.encode == "" && o.Result.Stderr.Content != "warn\n" {
				t.Fatalf("stderr %q", o.Result.Stderr.Content)
			}
		})
	}
}
