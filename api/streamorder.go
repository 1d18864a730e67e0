package api

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/order"
)

// streamOutputsFrom is the kept output size (stdout and stderr together)
// from which encodeOrder streams the contents instead of building them.
const streamOutputsFrom = 64 << 10

// encodeOrder writes o exactly as encode(w, status, toResponse(o)) would,
// byte for byte, but with large kept outputs written straight from o's
// bytes into the response: built in memory, a 10 MiB output became a
// 10–13 MiB string, then a JSON buffer of the whole body, before the first
// byte left (docs/benchmarks.md: serve above 160 MiB RSS for one ?wait).
// The envelope is marshalled with a placeholder per content, then written
// around the contents.
func encodeOrder(w http.ResponseWriter, status int, o *order.Order) {
	res := o.Result
	if res == nil || len(res.Stdout.Content)+len(res.Stderr.Content) < streamOutputsFrom {
		encode(w, status, toResponse(o))
		return
	}
	bare, r := *o, *res
	r.Stdout.Content, r.Stderr.Content = nil, nil
	bare.Result = &r
	resp := toResponse(&bare)
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	type part struct {
		marker []byte
		b      []byte
		enc    order.Encoding
	}
	parts := []part{}
	for _, s := range []struct {
		st   *Stream
		b    []byte
		want order.Encoding
	}{{&resp.Result.Stdout, res.Stdout.Content, o.StdoutEncode}, {&resp.Result.Stderr, res.Stderr.Content, o.StderrEncode}} {
		got := encodingOf(s.b, s.want)
		s.st.Encode, s.st.Switched = nil, s.want == order.EncodeText && got == order.EncodeBase64
		if got != order.EncodeText {
			e := string(got)
			s.st.Encode = &e
		}
		s.st.Content = "orderly-content-" + hex.EncodeToString(nonce[:]) + "-" + string(rune('a'+len(parts)))
		parts = append(parts, part{marker: []byte(`"` + s.st.Content + `"`), b: s.b, enc: got})
	}
	var env bytes.Buffer
	enc := json.NewEncoder(&env)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(resp); err != nil {
		encode(w, status, toResponse(o))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	bw := bufio.NewWriterSize(w, 32<<10)
	rest := env.Bytes()
	for _, p := range parts {
		i := bytes.Index(rest, p.marker)
		if i < 0 { // cannot happen: the marker is a plain ASCII string
			break
		}
		_, _ = bw.Write(rest[:i])
		if err := writeContent(bw, p.b, p.enc); err != nil {
			return // the client went away
		}
		rest = rest[i+len(p.marker):]
	}
	_, _ = bw.Write(rest)
	_ = bw.Flush()
}

// encodingOf is the encoding order.Encode renders b in when asked for
// want, without rendering it.
func encodingOf(b []byte, want order.Encoding) order.Encoding {
	switch want {
	case order.EncodeBase64, order.EncodeBase85:
		return want
	}
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return order.EncodeText
	}
	return order.EncodeBase64
}

// writeContent writes b rendered in e as a JSON string.
func writeContent(w *bufio.Writer, b []byte, e order.Encoding) error {
	switch e {
	case order.EncodeBase64:
		_ = w.WriteByte('"')
		be := base64.NewEncoder(base64.StdEncoding, w)
		_, _ = be.Write(b)
		_ = be.Close()
		return w.WriteByte('"')
	case order.EncodeBase85:
		s, _ := order.Encode(b, e) // ASCII, but with '"' and '\' to escape
		b = []byte(s)
	}
	_ = w.WriteByte('"')
	if err := writeJSONText(w, b); err != nil {
		return err
	}
	return w.WriteByte('"')
}

// writeJSONText writes valid UTF-8 b as the inside of a JSON string, in
// chunks cut at rune boundaries, each escaped by encoding/json itself (so
// the escapes are exactly encode's: no HTML escaping, \u2028 and \u2029
// escaped).
func writeJSONText(w io.Writer, b []byte) error {
	const chunk = 32 << 10
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for len(b) > 0 {
		n := min(chunk, len(b))
		for n < len(b) && !utf8.RuneStart(b[n]) {
			n++
		}
		buf.Reset()
		if err := enc.Encode(string(b[:n])); err != nil {
			return err
		}
		q := buf.Bytes()
		if _, err := w.Write(q[1 : len(q)-2]); err != nil { // "…"\n
			return err
		}
		b = b[n:]
	}
	return nil
}
