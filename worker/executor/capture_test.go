package executor

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/orderly-run/orderly/internal/order"
)

// want is the reference model of a capture: the whole stream if it fits in
// the cap, else the first cap/2 bytes, the marker and the last cap-cap/2.
func want(stream []byte, limit int) (content []byte, truncated bool) {
	if limit < 0 {
		limit = 0
	}
	if len(stream) <= limit {
		return stream, false
	}
	head, tail := limit/2, limit-limit/2
	var b bytes.Buffer
	b.Write(stream[:head])
	b.WriteString(order.TruncationMarker(int64(len(stream) - limit)))
	b.Write(stream[len(stream)-tail:])
	return b.Bytes(), true
}

// chunked writes stream to w in pieces of the given sizes, cycling through
// them; a size of 0 means all at once.
func chunked(t *testing.T, w *capture, stream []byte, sizes []int) {
	t.Helper()
	for i := 0; len(stream) > 0; i++ {
		n := len(stream)
		if s := sizes[i%len(sizes)]; s > 0 {
			n = min(s, n)
		}
		got, err := w.Write(stream[:n])
		if err != nil || got != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
		}
		stream = stream[n:]
	}
}

func TestCapture(t *testing.T) {
	t.Parallel()
	stream := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		return b
	}
	chunkings := map[string][]int{
		"one write":    {0},
		"byte by byte": {1},
		"threes":       {3},
		"mixed":        {2, 7, 1, 64, 5},
	}
	tests := []struct {
		name  string
		limit int64
		n     int
	}{
		{"empty", 10, 0},
		{"below cap", 10, 9},
		{"at cap", 10, 10},
		{"one above cap", 10, 11},
		{"far above cap", 10, 1000},
		{"odd cap below", 11, 10},
		{"odd cap at", 11, 11},
		{"odd cap above", 11, 12},
		{"odd cap far above", 11, 503},
		{"cap 1 at", 1, 1},
		{"cap 1 above", 1, 2},
		{"cap 2 above", 2, 5},
		{"cap 0 keeps nothing", 0, 5},
		{"negative cap keeps nothing", -3, 5},
		{"cap 0 empty", 0, 0},
		{"head exactly, tail across ring wrap", 8, 4 + 4 + 3},
		{"large", 4096, 100_003},
	}
	for _, tt := range tests {
		for cname, sizes := range chunkings {
			t.Run(tt.name+"/"+cname, func(t *testing.T) {
				in := stream(tt.n)
				var seen bytes.Buffer
				c := newCapture("stdout", tt.limit, func(s string, p []byte) {
					if s != "stdout" {
						t.Errorf("OnOutput stream = %q", s)
					}
					seen.Write(p)
				})
				chunked(t, c, in, sizes)
				out := c.output()

				wantContent, wantTrunc := want(in, int(tt.limit))
				if !bytes.Equal(out.Content, wantContent) {
					t.Errorf("Content = %q, want %q", out.Content, wantContent)
				}
				if out.Truncated != wantTrunc {
					t.Errorf("Truncated = %v, want %v", out.Truncated, wantTrunc)
				}
				if out.Bytes != int64(tt.n) {
					t.Errorf("Bytes = %d, want %d", out.Bytes, tt.n)
				}
				if sum := sha256.Sum256(in); !bytes.Equal(out.SHA256, sum[:]) {
					t.Errorf("SHA256 = %x, want %x", out.SHA256, sum)
				}
				if !bytes.Equal(seen.Bytes(), in) {
					t.Errorf("OnOutput saw %d bytes, want the %d written", seen.Len(), len(in))
				}
			})
		}
	}
}

func TestCaptureMarker(t *testing.T) {
	t.Parallel()
	c := newCapture("stderr", 4, nil)
	chunked(t, c, []byte("abcdefghij"), []int{0})
	got := string(c.output().Content)
	if want := "ab\n…[orderly: 6 bytes omitted]…\nij"; got != want {
		t.Fatalf("Content = %q, want %q", got, want)
	}
}

// TestCaptureCutsBetweenCharacters: a cap that falls inside a character
// moves the cut to the character's edge, so that truncated text is still
// text (valid UTF-8 is answered as text, anything else as base64).
func TestCaptureCutsBetweenCharacters(t *testing.T) {
	t.Parallel()
	c := newCapture("stdout", 8, nil)
	chunked(t, c, []byte("€€€€€€"), []int{2}) // 18 bytes of 3-byte characters; head 4, tail 4
	got := string(c.output().Content)
	if want := "€\n…[orderly: 12 bytes omitted]…\n€"; got != want {
		t.Fatalf("Content = %q, want %q", got, want)
	}
}

// TestCaptureMemoryBounded checks that whatever is written, the buffer
// never grows past the cap.
func TestCaptureMemoryBounded(t *testing.T) {
	t.Parallel()
	const limit = 1001
	rng := rand.New(rand.NewPCG(1, 2))
	c := newCapture("stdout", limit, nil)
	buf := make([]byte, 70_000)
	var all []byte
	for range 200 {
		p := buf[:rng.IntN(len(buf))]
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		all = append(all, p...)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
		if cap(c.kept) > limit {
			t.Fatalf("after %d bytes: cap(kept)=%d, cap is %d", c.n, cap(c.kept), limit)
		}
	}
	out := c.output()
	wantContent, _ := want(all, limit)
	if !bytes.Equal(out.Content, wantContent) {
		t.Fatal("content differs from the reference model")
	}
	if sum := sha256.Sum256(all); !bytes.Equal(out.SHA256, sum[:]) || out.Bytes != int64(len(all)) {
		t.Fatalf("Bytes=%d SHA256=%x, want %d %x", out.Bytes, out.SHA256, len(all), sum)
	}
}

// TestCaptureRandom compares random writes against the reference model.
// TestCaptureRandom writes random streams, half of them UTF-8 text of one-
// to four-byte characters, in random chunks. Past the cap the content is
// the stream's head, the marker and its tail, each cut moved by at most
// three bytes so as not to split a character when that leaves text, and
// the marker counts what is left out: text stays text, and other bytes
// are cut at the cap.
func TestCaptureRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	runes := []rune{'a', 'é', '€', '𝄞', '\n'}
	for i := range 600 {
		limit := rng.IntN(40)
		var in []byte
		text := i%2 == 0
		for n := rng.IntN(120); len(in) < n; {
			if text {
				in = utf8.AppendRune(in, runes[rng.IntN(len(runes))])
			} else {
				in = append(in, byte(rng.Uint32()))
			}
		}
		sizes := []int{rng.IntN(9), rng.IntN(30) + 1, rng.IntN(3) + 1}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			c := newCapture("stdout", int64(limit), nil)
			chunked(t, c, in, sizes)
			out := c.output()
			fail := func(why string) {
				t.Fatalf("limit %d, %d bytes in chunks %v: %s: got %q (trunc %v, %d bytes)",
					limit, len(in), sizes, why, out.Content, out.Truncated, out.Bytes)
			}
			if out.Bytes != int64(len(in)) {
				fail("byte count")
			}
			if len(in) <= limit {
				if !bytes.Equal(out.Content, in) || out.Truncated {
					fail("want the stream as it was")
				}
				return
			}
			if !out.Truncated {
				fail("not marked truncated")
			}
			headMax, tailMax := limit/2, limit-limit/2
			for h := headMax; h >= max(headMax-3, 0); h-- {
				for tl := tailMax; tl >= max(tailMax-3, 0); tl-- {
					want := append(append(slices.Clip(in[:h]), order.TruncationMarker(int64(len(in)-h-tl))...), in[len(in)-tl:]...)
					if !bytes.Equal(out.Content, want) {
						continue
					}
					switch {
					case text && !utf8.Valid(out.Content):
						fail("text cut inside a character")
					case !utf8.Valid(out.Content) && (h != headMax || tl != tailMax):
						fail("bytes that are not text cut elsewhere than at the cap")
					}
					return
				}
			}
			fail("not head, marker and tail")
		})
	}
}

// TestCaptureGrowsToTheCapPastGrowFullFrom: a stream's buffer grows
// geometrically up to growFullFrom, then straight to the cap, so that a
// large stream leaves no trail of ever larger buffers behind.
func TestCaptureGrowsToTheCapPastGrowFullFrom(t *testing.T) {
	t.Parallel()
	const limit = 10 << 20
	c := newCapture("stdout", limit, nil)
	p := bytes.Repeat([]byte("y\n"), 16<<10)
	var all []byte
	for len(all) <= growFullFrom {
		if cap(c.kept) == limit {
			t.Fatalf("after %d bytes the buffer is already the cap", len(all))
		}
		_, _ = c.Write(p)
		all = append(all, p...)
	}
	if cap(c.kept) != limit {
		t.Fatalf("after %d bytes cap(kept) = %d, want the cap %d", len(all), cap(c.kept), limit)
	}
	if out := c.output(); !bytes.Equal(out.Content, all) || out.Truncated {
		t.Fatalf("content of %d bytes (truncated %v), want the %d written", len(out.Content), out.Truncated, len(all))
	}
}

// With a cap above growFullTo the buffer keeps doubling: a 2 MiB output
// under a 1 GiB worker.max_output_bytes must not take the whole cap.
func TestCaptureKeepsDoublingUnderALargeCap(t *testing.T) {
	t.Parallel()
	const limit = 1 << 30
	c := newCapture("stdout", limit, nil)
	p := bytes.Repeat([]byte("y\n"), 16<<10)
	for written := 0; written <= 2*growFullFrom; written += len(p) {
		_, _ = c.Write(p)
	}
	if cap(c.kept) > 8*growFullFrom {
		t.Fatalf("after ~2 MiB under a 1 GiB cap, cap(kept) = %d", cap(c.kept))
	}
}
