package api

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestEncodeOrderStreamsTheSameBytes: for large kept outputs in every
// encoding (text with every escape encode makes, multi-byte runes across
// chunk boundaries, U+2028; NUL and invalid UTF-8 switching to base64;
// base64 and base85 asked for) encodeOrder writes exactly what
// encode(toResponse(o)) writes, both from the order's bytes and from
// slices of them read from the database (an order GetOrderLean read).
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
		{"ends inside a rune", append(runes[:len(runes)-1:len(runes)-1], runes[:2]...), nil, order.EncodeText, order.EncodeText},
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
			want := httptest.NewRecorder()
			encode(want, http.StatusOK, toResponse(o))
			got := httptest.NewRecorder()
			noRead := sliceReader(func(postgres.Output, []byte, int64) (int, error) { return 0, errors.New("read from the database") })
			if err := writeOrder(context.Background(), got, http.StatusOK, o, toResponse, noRead, 1<<20); err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, got, want)

			// The same order as GetOrderLean reads it: the contents left
			// in the database, streamed from slices that cut runes,
			// escapes and base64 and base85 groups anywhere.
			if !postgres.OutputsLeft(leftOut(o)) {
				return
			}
			const slice = 996 // a multiple of 4; 996 % 3 == 0, but runes are 1-4 bytes
			reads := map[postgres.Output]int{}
			read := sliceReader(func(out postgres.Output, p []byte, off int64) (int, error) {
				if len(p) != slice {
					t.Errorf("read of %d bytes, want %d", len(p), slice)
				}
				reads[out]++
				b := map[postgres.Output][]byte{postgres.Stdout: c.stdout, postgres.Stderr: c.stderr}[out]
				return copy(p, b[min(off, int64(len(b))):]), nil
			})
			got = httptest.NewRecorder()
			if err := writeOrder(context.Background(), got, http.StatusOK, leftOut(o), toResponse, read, slice); err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, got, want)
			if reads[postgres.Stdout] < len(c.stdout)/slice || reads[postgres.Stderr] < len(c.stderr)/slice {
				t.Fatalf("%d and %d reads of %d and %d bytes", reads[postgres.Stdout], reads[postgres.Stderr], len(c.stdout), len(c.stderr))
			}
		})
	}
}

// TestWriteOrderSmallAllocations: an answer with no output to stream
// costs what encode costs, and the deferredOutputs it did not need. The
// placeholders' nonce was made for every answer (a read of crypto/rand,
// its hex and the prefix: two allocations more); it is made only when an
// output is deferred.
func TestWriteOrderSmallAllocations(t *testing.T) {
	exit := 0
	o := &order.Order{ID: order.NewID(), Host: "web1", Status: order.StatusSucceeded, Command: "true",
		Result: &order.Result{ExitCode: &exit, Stdout: order.Output{Content: []byte("hi\n"), Bytes: 3, SHA256: []byte{1}}}}
	noRead := sliceReader(func(postgres.Output, []byte, int64) (int, error) { return 0, errors.New("read from the database") })
	resp := toResponse(o)
	respOf := func(*order.Order) Order { return resp }
	w := httptest.NewRecorder()
	encoded := testing.AllocsPerRun(200, func() {
		w.Body.Reset()
		encode(w, http.StatusOK, resp)
	})
	written := testing.AllocsPerRun(200, func() {
		w.Body.Reset()
		if err := writeOrder(context.Background(), w, http.StatusOK, o, respOf, noRead, 1<<20); err != nil {
			t.Fatal(err)
		}
	})
	if written > encoded+1 {
		t.Fatalf("%.0f allocations to write a small order's answer, %.0f to encode it: want at most one more", written, encoded)
	}
}

// sliceReader reads an order's outputs left in the database.
type sliceReader func(out postgres.Output, p []byte, off int64) (int, error)

func (r sliceReader) ReadOutputAt(_ context.Context, _ uuid.UUID, out postgres.Output, p []byte, off int64) (int, error) {
	return r(out, p, off)
}

// leftOut is o as GetOrderLean reads it when it leaves the outputs in the
// database.
func leftOut(o *order.Order) *order.Order {
	l, r := *o, *o.Result
	r.Stdout.Content, r.Stderr.Content = nil, nil
	l.Result = &r
	return &l
}

// sameAnswer fails unless got holds exactly want's answer.
func sameAnswer(t *testing.T, got, want *httptest.ResponseRecorder) {
	t.Helper()
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
}

// TestEncodeOrderReadFailure: a slice that cannot be read before the
// status is written is an error to answer with (nothing written yet);
// after it, an *errAfterHeader, for encodeOrder to cut the connection.
func TestEncodeOrderReadFailure(t *testing.T) {
	exit := 0
	const slice = 996
	big := bytes.Repeat([]byte("x"), 100*slice+10)
	broken := errors.New("connection lost")
	for _, c := range []struct {
		name      string
		enc       order.Encoding
		failOn    int // the stdout read that fails, from 1
		afterSent bool
	}{
		{"text, while checked before the status", order.EncodeText, 1, false},
		{"text, while written after it", order.EncodeText, 101 + 2, true},
		{"base64, not checked", order.EncodeBase64, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := &order.Order{ID: order.NewID(), Host: "web1", Status: order.StatusSucceeded, Command: "cat", StdoutEncode: c.enc,
				Result: &order.Result{ExitCode: &exit, Stdout: order.Output{Bytes: int64(len(big))}}}
			reads := 0
			read := sliceReader(func(out postgres.Output, p []byte, off int64) (int, error) {
				if out == postgres.Stderr {
					return 0, nil
				}
				if reads++; reads == c.failOn {
					return 0, broken
				}
				return copy(p, big[off:]), nil
			})
			rec := httptest.NewRecorder()
			err := writeOrder(context.Background(), rec, http.StatusOK, o, toResponse, read, slice)
			var sent *errAfterHeader
			if !errors.Is(err, broken) || errors.As(err, &sent) != c.afterSent {
				t.Fatalf("error %v (%T), want %v after the status: %v", err, err, broken, c.afterSent)
			}
			if wrote := rec.Header().Get("Content-Type") != ""; wrote != c.afterSent {
				t.Fatalf("status written: %v", wrote)
			}
		})
	}
}
