package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// streamOutputsFrom is the kept output size (stdout and stderr together)
// from which encodeOrder streams the contents instead of building them:
// the size from which a lean read leaves them in the database.
const streamOutputsFrom = postgres.LeaveOutputsFrom

// outputSlice is how much of an output left in the database one read
// fetches: 1 MiB less room for the row's header, so that pgx reads it into
// a 1 MiB buffer, and a multiple of 4 so that base85 slices join into the
// encoding of the whole.
const outputSlice = 1<<20 - 64

// encodeOrder writes respOf(o), the answer for o, exactly as
// encode(w, status, respOf(o)) would, byte for byte, but with large kept
// outputs written straight into the response: from o's bytes, or, when the
// store left them in the database (GetOrderLean), a slice at a time from
// there. Built in memory, a 10 MiB output became a 10–13 MiB string, then
// a JSON buffer of the whole body, before the first byte left (serve above
// 160 MiB RSS for one ?wait); read whole, it was pgx's 16 MiB read buffer
// and the scanned copy. The envelope is marshalled with a placeholder per
// content, then written around the contents. The order's correlation id
// goes in X-Correlation-Id (setCorrelation).
func (s *Server) encodeOrder(w http.ResponseWriter, r *http.Request, status int, o *order.Order, respOf func(*order.Order) Order) {
	setCorrelation(w.Header(), o)
	s.endStreamed(w, r, writeOrder(r.Context(), w, status, o, respOf, s.Store, outputSlice))
}

// encodeOrders writes v, an answer holding orders, as encode would, with
// each order's large kept outputs streamed as encodeOrder streams one
// order's. resps holds a pointer to the answer's entry of each order, set
// here to respOf of it: a listing of orders with megabytes of output each
// held them all in memory at once, twice (GET /v1/orders?limit=1000).
func (s *Server) encodeOrders(w http.ResponseWriter, r *http.Request, status int, v any, orders []*order.Order, resps []*Order,
	respOf func(*order.Order) Order) {
	s.endStreamed(w, r, s.writeOrders(r.Context(), w, status, v, orders, resps, respOf))
}

// writeOrders is encodeOrders returning its failure: before any of the
// answer went out, or after (errAfterHeader).
func (s *Server) writeOrders(ctx context.Context, w http.ResponseWriter, status int, v any, orders []*order.Order, resps []*Order,
	respOf func(*order.Order) Order) error {
	d := newDeferredOutputs(outputSlice)
	for i, o := range orders {
		resp, err := d.order(ctx, o, respOf, s.Store)
		if err != nil {
			return err
		}
		*resps[i] = resp
	}
	return d.write(w, status, v)
}

// endStreamed finishes a streamed answer that ended with err.
func (s *Server) endStreamed(w http.ResponseWriter, r *http.Request, err error) {
	if err == nil {
		return
	}
	var sent *errAfterHeader
	if !errors.As(err, &sent) {
		s.writeError(w, r, err)
		return
	}
	// The status is out: all that is left is to cut the connection, so
	// that the client sees a broken answer, not a short one. A client
	// that went away canceled the read: nothing to report.
	if r.Context().Err() == nil {
		s.logger.Warn("order answer cut short", "error", sent.err)
	}
	panic(http.ErrAbortHandler)
}

// outputReader reads kept outputs left in the database (Store).
type outputReader interface {
	ReadOutputAt(ctx context.Context, id uuid.UUID, out postgres.Output, p []byte, off int64) (int, error)
}

// writeOrder is encodeOrder with the outputs left in the database read
// from outputs, sliceLen bytes at a time. It returns deferredOutputs.write's
// errors.
func writeOrder(ctx context.Context, w http.ResponseWriter, status int, o *order.Order, respOf func(*order.Order) Order,
	outputs outputReader, sliceLen int) error {
	d := newDeferredOutputs(sliceLen)
	resp, err := d.order(ctx, o, respOf, outputs)
	if err != nil {
		return err
	}
	return d.write(w, status, resp)
}

// errAfterHeader is a failure once the answer's status was written.
type errAfterHeader struct{ err error }

func (e *errAfterHeader) Error() string { return e.err.Error() }
func (e *errAfterHeader) Unwrap() error { return e.err }

// keptOutput is one kept output an answer writes: in memory (b), or left
// in the database and read a slice at a time (read).
type keptOutput struct {
	b    []byte
	read func(p []byte, off int64) (int, error) // nil: b is the content
	want order.Encoding
}

// each hands the output's bytes to fn in order: b whole, or slices read
// into buf, each valid only during the call.
func (k keptOutput) each(buf []byte, fn func([]byte) error) error {
	if k.read == nil {
		return fn(k.b)
	}
	for off := int64(0); ; {
		n, err := k.read(buf, off)
		if err != nil {
			return err
		}
		if n > 0 {
			if err := fn(buf[:n]); err != nil {
				return err
			}
		}
		if n < len(buf) {
			return nil
		}
		off += int64(n)
	}
}

// deferredOutputs are the kept outputs an answer writes in place of
// placeholders in its JSON: "orderly-content-<nonce>-<i>" for the i-th.
type deferredOutputs struct {
	prefix   string // the placeholders' prefix, with the answer's nonce: made by the first add
	outs     []deferredOutput
	buf      []byte // one slice of an output read from the database
	sliceLen int
}

type deferredOutput struct {
	k   keptOutput
	enc order.Encoding
}

func newDeferredOutputs(sliceLen int) *deferredOutputs {
	return &deferredOutputs{sliceLen: sliceLen}
}

// order is respOf(o), with o's kept outputs deferred when they are large
// or left in the database (postgres.OutputsLeft).
func (d *deferredOutputs) order(ctx context.Context, o *order.Order, respOf func(*order.Order) Order, outputs outputReader) (Order, error) {
	res := o.Result
	left := postgres.OutputsLeft(o)
	if res == nil || !left && len(res.Stdout.Content)+len(res.Stderr.Content) < streamOutputsFrom {
		return respOf(o), nil
	}
	outs := [2]keptOutput{{b: res.Stdout.Content, want: o.StdoutEncode}, {b: res.Stderr.Content, want: o.StderrEncode}}
	if left {
		outs[0].read = func(p []byte, off int64) (int, error) {
			return outputs.ReadOutputAt(ctx, o.ID, postgres.Stdout, p, off)
		}
		outs[1].read = func(p []byte, off int64) (int, error) {
			return outputs.ReadOutputAt(ctx, o.ID, postgres.Stderr, p, off)
		}
	}
	bare, rb := *o, *res
	rb.Stdout.Content, rb.Stderr.Content = nil, nil
	bare.Result = &rb
	resp := respOf(&bare)
	for i, st := range []*Stream{&resp.Result.Stdout, &resp.Result.Stderr} {
		if err := d.add(st, outs[i]); err != nil {
			return Order{}, err
		}
	}
	return resp, nil
}

// add makes st the placeholder of k, in the encoding order.Encode would
// render k in.
func (d *deferredOutputs) add(st *Stream, k keptOutput) error {
	if k.read != nil && d.buf == nil {
		d.buf = make([]byte, d.sliceLen)
	}
	got, err := k.encoding(d.buf)
	if err != nil {
		return err
	}
	st.Encode, st.Switched = nil, k.want == order.EncodeText && got == order.EncodeBase64
	if d.prefix == "" {
		// Only an answer with an output to defer needs the nonce: most
		// answers have none, and made for each one it was two
		// allocations and a read of crypto/rand per answer
		// (docs/benchmarks.md, "The sync order's wait side").
		var nonce [8]byte
		_, _ = rand.Read(nonce[:])
		d.prefix = "orderly-content-" + hex.EncodeToString(nonce[:]) + "-"
	}
	if got != order.EncodeText {
		e := string(got)
		st.Encode = &e
	}
	st.Content = d.prefix + strconv.Itoa(len(d.outs))
	d.outs = append(d.outs, deferredOutput{k: k, enc: got})
	return nil
}

// write writes v as encode(w, status, v) would, with the deferred outputs
// in place of their placeholders, reading those left in the database a
// slice at a time. An error before the status is written is returned as
// is, one after it as an *errAfterHeader.
func (d *deferredOutputs) write(w http.ResponseWriter, status int, v any) error {
	if len(d.outs) == 0 {
		encode(w, status, v)
		return nil
	}
	var env bytes.Buffer
	enc := json.NewEncoder(&env)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	bw := bufio.NewWriterSize(w, 32<<10)
	marker := []byte(`"` + d.prefix)
	rest := env.Bytes()
	for {
		j := bytes.Index(rest, marker)
		if j < 0 {
			break
		}
		_, _ = bw.Write(rest[:j])
		rest = rest[j+len(marker):]
		end := bytes.IndexByte(rest, '"')
		i, err := strconv.Atoi(string(rest[:end]))
		if err != nil || i >= len(d.outs) { // cannot happen: only add writes the prefix
			return &errAfterHeader{fmt.Errorf("output placeholder %q", rest[:end])}
		}
		rest = rest[end+1:]
		out := d.outs[i]
		cw := newContentWriter(bw, out.enc)
		var werr error
		err = out.k.each(d.buf, func(p []byte) error { werr = cw.write(p); return werr })
		if werr == nil && err != nil {
			return &errAfterHeader{err}
		}
		if werr != nil || cw.close() != nil {
			return nil // the client went away
		}
	}
	_, _ = bw.Write(rest)
	_ = bw.Flush()
	return nil
}

// errNotText stops the text check at the first byte that is not text.
var errNotText = errors.New("not text")

// encoding is the encoding order.Encode renders the output in when asked
// for want, without rendering it: text asked for is read through once (a
// slice at a time when left in the database), up to the first byte that
// is not UTF-8 text.
func (k keptOutput) encoding(buf []byte) (order.Encoding, error) {
	switch k.want {
	case order.EncodeBase64, order.EncodeBase85:
		return k.want, nil
	}
	var runes runeJoin
	text := func(p []byte) error {
		if !utf8.Valid(p) || bytes.IndexByte(p, 0) >= 0 {
			return errNotText
		}
		return nil
	}
	err := k.each(buf, func(p []byte) error { return runes.write(p, text) })
	if err == nil {
		err = runes.flush(text)
	}
	switch {
	case errors.Is(err, errNotText):
		return order.EncodeBase64, nil
	case err != nil:
		return "", err
	}
	return order.EncodeText, nil
}

// contentWriter writes an output's bytes, handed to it in pieces, as one
// JSON string in encoding e.
type contentWriter struct {
	w     *bufio.Writer
	e     order.Encoding
	b64   io.WriteCloser
	runes runeJoin
}

// newContentWriter opens the JSON string.
func newContentWriter(w *bufio.Writer, e order.Encoding) *contentWriter {
	_ = w.WriteByte('"')
	c := &contentWriter{w: w, e: e}
	if e == order.EncodeBase64 {
		c.b64 = base64.NewEncoder(base64.StdEncoding, w)
	}
	return c
}

// write writes the next piece. Base85 pieces other than the last must be
// whole 4-byte groups.
func (c *contentWriter) write(p []byte) error {
	switch c.e {
	case order.EncodeBase64:
		_, err := c.b64.Write(p)
		return err
	case order.EncodeBase85:
		s, _ := order.Encode(p, c.e) // ASCII, but with '"' and '\' to escape
		return writeJSONText(c.w, []byte(s))
	}
	return c.runes.write(p, func(q []byte) error { return writeJSONText(c.w, q) })
}

// close ends the content and closes the JSON string.
func (c *contentWriter) close() error {
	if c.b64 != nil {
		_ = c.b64.Close()
	}
	if err := c.runes.flush(func(q []byte) error { return writeJSONText(c.w, q) }); err != nil {
		return err
	}
	return c.w.WriteByte('"')
}

// runeJoin passes on bytes that arrive in pieces as pieces that never cut
// a UTF-8 sequence: a sequence cut at the end of one piece is held back
// and passed on whole once the next piece completes it. The pieces passed
// on join into the bytes received, so valid UTF-8 stays valid piece by
// piece, and anything else has an invalid piece.
type runeJoin struct {
	part [utf8.UTFMax]byte
	n    int
}

// write passes p on to fn, holding back a sequence p ends inside of.
func (j *runeJoin) write(p []byte, fn func([]byte) error) error {
	for j.n > 0 && len(p) > 0 && !utf8.FullRune(j.part[:j.n]) {
		j.part[j.n] = p[0]
		j.n, p = j.n+1, p[1:]
	}
	if j.n > 0 {
		if !utf8.FullRune(j.part[:j.n]) {
			return nil // p ended before the sequence did
		}
		if err := fn(j.part[:j.n]); err != nil {
			return err
		}
		j.n = 0
	}
	cut := len(p)
	for i := len(p) - 1; i >= 0 && i > len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				cut = i
			}
			break
		}
	}
	j.n = copy(j.part[:], p[cut:])
	if cut == 0 {
		return nil
	}
	return fn(p[:cut])
}

// flush passes on a sequence still held back: the bytes ended inside it.
func (j *runeJoin) flush(fn func([]byte) error) error {
	if j.n == 0 {
		return nil
	}
	n := j.n
	j.n = 0
	return fn(j.part[:n])
}

// writeJSONText writes valid UTF-8 b as the inside of a JSON string with
// exactly encode's escapes (encoding/json's without HTML escaping: \" \\
// \b \f \n \r \t, \u00XX for the other control bytes, \u2028 and \u2029),
// straight from b: a copy per chunk for encoding/json was 10 MiB of
// garbage per 10 MiB answered.
func writeJSONText(w *bufio.Writer, b []byte) error {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c >= utf8.RuneSelf {
			if c == 0xe2 && i+2 < len(b) && b[i+1] == 0x80 && b[i+2]&^1 == 0xa8 { // U+2028, U+2029
				_, _ = w.Write(b[start:i])
				_, _ = w.WriteString(`\u202`)
				_ = w.WriteByte(hex[b[i+2]&0xf])
				i += 3
				start = i
				continue
			}
			i++ // the bytes of other runes pass as they are
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		_, _ = w.Write(b[start:i])
		switch c {
		case '"', '\\':
			_ = w.WriteByte('\\')
			_ = w.WriteByte(c)
		case '\b':
			_, _ = w.WriteString(`\b`)
		case '\f':
			_, _ = w.WriteString(`\f`)
		case '\n':
			_, _ = w.WriteString(`\n`)
		case '\r':
			_, _ = w.WriteString(`\r`)
		case '\t':
			_, _ = w.WriteString(`\t`)
		default:
			_, _ = w.WriteString(`\u00`)
			_ = w.WriteByte(hex[c>>4])
			_ = w.WriteByte(hex[c&0xf])
		}
		i++
		start = i
	}
	_, err := w.Write(b[start:]) // bufio.Writer keeps the first error
	return err
}
