package executor

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// maskedRef masks stream as the capture must: every occurrence of every
// secret in the stream as printed, past orderly-rb- for a token.
func maskedRef(stream []byte, secrets [][]byte) []byte {
	out := bytes.Clone(stream)
	for _, s := range secrets {
		from := 0
		if bytes.HasPrefix(s, []byte(tokenPrefix)) {
			from = len(tokenPrefix)
		}
		for i := 0; i+len(s) <= len(stream); i++ {
			if bytes.Equal(stream[i:i+len(s)], s) {
				for k := i + from; k < i+len(s); k++ {
					out[k] = '*'
				}
			}
		}
	}
	return out
}

// TestCaptureMaskMatchesTheWholeStreamsMask: over random streams of a
// small alphabet (so that secrets overlap, repeat and straddle every
// write's end), random secrets and random write sizes, what OnOutput
// sees, in order, and what is kept, counted and hashed are the stream
// masked as a whole; no byte is sent twice or lost, and what is held back
// between writes stays shorter than the longest secret.
func TestCaptureMaskMatchesTheWholeStreamsMask(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(17, 27))
	word := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abc"[r.IntN(3)]
		}
		return b
	}
	for round := range 20000 {
		var secrets [][]byte
		longest := 0
		for range 1 + r.IntN(3) {
			s := word(1 + r.IntN(6))
			if r.IntN(8) == 0 {
				s = append([]byte(tokenPrefix), s...)
			}
			secrets = append(secrets, s)
			longest = max(longest, len(s))
		}
		stream := word(r.IntN(80))
		if r.IntN(4) == 0 { // a token printed, cut anywhere
			stream = append(stream, secrets[0]...)
			stream = append(stream, word(r.IntN(5))...)
		}
		want := maskedRef(stream, secrets)
		var live bytes.Buffer
		limit := int64(r.IntN(100))
		c := newCapture("stdout", limit, func(_ string, p []byte) { live.Write(p) })
		c.secrets = secrets
		for p := stream; len(p) > 0; {
			n := min(len(p), 1+r.IntN(12))
			if _, err := c.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
			if len(c.held) >= longest {
				t.Fatalf("round %d: %d bytes held, longest secret %d", round, len(c.held), longest)
			}
		}
		out := c.output()
		sum := sha256.Sum256(want)
		if !bytes.Equal(live.Bytes(), want) || out.Bytes != int64(len(stream)) || !bytes.Equal(out.SHA256, sum[:]) {
			t.Fatalf("round %d: secrets %q, stream %q:\nlive %q\nwant %q (%d bytes counted)", round, secrets, stream, live.Bytes(), want, out.Bytes)
		}
		if !out.Truncated && !bytes.Equal(out.Content, want) {
			t.Fatalf("round %d: secrets %q, stream %q: kept %q, want %q", round, secrets, stream, out.Content, want)
		}
	}
}

// BenchmarkCaptureWrite: what a capture costs per read of a pipe, with
// no secret (every order but scripts and actions with secret params) and
// with a delegated token, at the cap's default and past it.
func BenchmarkCaptureWrite(b *testing.B) {
	chunk := bytes.Repeat([]byte("+ curl -H 'Authorization: Bearer $TOKEN' https://example/\n"), readBufferSize/58+1)[:readBufferSize]
	for _, bc := range []struct {
		name    string
		secrets [][]byte
	}{
		{"none", nil},
		{"token", [][]byte{[]byte("orderly-rb-zxMN8cUny3E1SllFnqR4fg1Nb0EmeInlwzw0cWxjYNk")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newCapture("stdout", 10<<20, func(string, []byte) {})
			c.secrets = bc.secrets
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.Write(chunk)
			}
		})
	}
}
