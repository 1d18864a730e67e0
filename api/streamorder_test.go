package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
)

// TestEncodeOrderStreamsTheSameBytes: for large kept outputs in every
// encoding (text with every escape encode makes, multi-byte runes across
// chunk boundaries, U+2028; NUL and invalid UTF-8 switching to base64;
// base64 and base85 asked for) encodeOrder writes exactly what
// encode(toResponse(o)) writes.
func TestEncodeOrderStreamsTheSameBytes(t *testing.T) {
	var esc []byte
	for c := range 0x80 {
		esc = append(esc, byte(c))
	}
	esc = append(esc, `"\<>& é€😀 `+"\u2028\u2029"...)
	text := bytes.Repeat(esc, (200<<10)/len(esc)) // ~200 KiB, escapes everywhere
	esc[0] = 'x'                                  // no NUL: stays text
	plain := bytes.Repeat(esc, (100<<10)/len(esc))
	runes := bytes.Repeat([]byte("a€😀"), 40<<10) // 3-, 4-byte runes across 32 KiB cuts
	invalid := append(bytes.Repeat([]byte("ok "), 30<<10), 0xff, 0xfe)
	exit := 0
	cases := []struct {
		name           string
		stdout, stderr []byte
		out, errEnc    order.Encoding
	}{
		{"text with NUL switches to base64", text, []byte("small"), order.EncodeText, order.EncodeText},
		{"text", plain, nil, order.EncodeText, order.EncodeText},
		{"runes across chunks", runes, plain, order.EncodeText, order.EncodeText},
		{"invalid UTF-8", invalid, nil, order.EncodeText, order.EncodeText},
		{"base64 asked", plain, runes, order.EncodeBase64, order.EncodeText},
		{"base85 asked", text, plain, order.EncodeBase85, order.EncodeBase85},
		{"small stays unstreamed", []byte("hi\n"), nil, order.EncodeText, order.EncodeText},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := &order.Order{ID: order.NewID(), Host: "web1", Status: order.StatusSucceeded, Command: "cat",
				StdoutEncode: c.out, StderrEncode: c.errEnc,
				Result: &order.Result{ExitCode: &exit, DurationMS: 3,
					Stdout: order.Output{Content: c.stdout, Bytes: int64(len(c.stdout)) * 3, Truncated: true, SHA256: []byte{1, 2}},
					Stderr: order.Output{Content: c.stderr, Bytes: int64(len(c.stderr)), SHA256: []byte{3}}}}
			want, got := httptest.NewRecorder(), httptest.NewRecorder()
			encode(want, http.StatusOK, toResponse(o))
			encodeOrder(got, http.StatusOK, o)
			if got.Code != want.Code || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
				t.Fatalf("status %d %q, want %d %q", got.Code, got.Header().Get("Content-Type"), want.Code, want.Header().Get("Content-Type"))
			}
			if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				g, w := got.Body.String(), want.Body.String()
				i := 0
				for i < min(len(g), len(w)) && g[i] == w[i] {
					i++
				}
				t.Fatalf("bodies differ at byte %d of %d/%d: got …%q…, want …%q…", i, len(g), len(w),
					g[max(0, i-20):min(len(g), i+40)], w[max(0, i-20):min(len(w), i+40)])
			}
			if strings.Contains(got.Body.String(), "orderly-content-") {
				t.Fatal("a placeholder was left in the body")
			}
		})
	}
}
