package executor

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
)

// TestCaptureMasksTheSecret: a capture given a secret (a script's
// delegated token) shows it nowhere, however the process's writes cut it,
// while every other byte, the count and the offsets stay as printed: what
// OnOutput sees, in order, is the kept content, and a stream's end gives
// back bytes held because they might have begun it.
func TestCaptureMasksTheSecret(t *testing.T) {
	const secret = "orderly-rb-zxMN8cUny3E1SllFnqR4fg1Nb0EmeInlwzw0cWxjYNk"
	mask := "orderly-rb-" + strings.Repeat("*", len(secret)-len("orderly-rb-"))
	stream := "+ curl -H 'Authorization: Bearer " + secret + "' -X POST\n" +
		"twice " + secret + secret + "\nneither orderly-rb-zx nor orderly- ends it: o"
	want := strings.ReplaceAll(stream, secret, mask)
	for _, sizes := range [][]int{{0}, {1}, {7}, {40, 3}, {len(stream) - 1}} {
		var live bytes.Buffer
		c := newCapture("stderr", 1<<20, func(_ string, p []byte) { live.Write(p) })
		c.secrets = [][]byte{[]byte(secret)}
		chunked(t, c, []byte(stream), sizes)
		out := c.output()
		if string(out.Content) != want || live.String() != want {
			t.Fatalf("writes of %v: kept %q, live %q; want %q", sizes, out.Content, live.String(), want)
		}
		if sum := sha256.Sum256([]byte(want)); out.Bytes != int64(len(stream)) || !bytes.Equal(out.SHA256, sum[:]) {
			t.Fatalf("writes of %v: %d bytes, sha256 %x; want %d and the masked stream's", sizes, out.Bytes, out.SHA256, len(stream))
		}
	}
}

// TestCaptureMasksEverySecret: with several secrets (an action's secret
// params), each is masked whole wherever it shows, also where it overlaps
// another's occurrence, and bytes that may begin any of them wait for the
// next write; a write that ends inside one secret while it may begin
// another sends none of the first's bytes unmasked.
func TestCaptureMasksEverySecret(t *testing.T) {
	for _, c := range []struct {
		secrets      []string
		stream, want string
	}{
		{[]string{"hunter22", "Sup3rS3cret", "S3cr"},
			"a hunter22b Sup3rS3cret c S3cr d hunter2 e Sup3r f S3c",
			"a ********b *********** c **** d hunter2 e Sup3r f S3c"},
		{[]string{"abcd", "cdxy"}, "zabcdxq abcdxy", "z****xq ******"},
	} {
		for _, sizes := range [][]int{{0}, {1}, {5}, {9, 2}} {
			var live bytes.Buffer
			w := newCapture("stdout", 1<<20, func(_ string, p []byte) { live.Write(p) })
			for _, s := range c.secrets {
				w.secrets = append(w.secrets, []byte(s))
			}
			chunked(t, w, []byte(c.stream), sizes)
			if out := w.output(); string(out.Content) != c.want || live.String() != c.want || out.Bytes != int64(len(c.stream)) {
				t.Fatalf("%q in writes of %v: kept %q, live %q, %d bytes; want %q", c.stream, sizes, out.Content, live.String(), out.Bytes, c.want)
			}
		}
	}
}

// TestCaptureMaskHoldsBackLittle: a stream that is one long run of a
// secret's own repeated byte (each position an occurrence) is masked at
// once, write by write: at most a secret's length waits for the next
// write. A first version held back every occurrence across a write's end
// whole, and so, one after another, the whole stream, unbounded, in
// quadratic time.
func TestCaptureMaskHoldsBackLittle(t *testing.T) {
	const secret = "aaaaaaaa"
	stream := bytes.Repeat([]byte("a"), 1<<20)
	var live bytes.Buffer
	c := newCapture("stdout", 2<<20, func(_ string, p []byte) { live.Write(p) })
	c.secrets = [][]byte{[]byte(secret)}
	for p := stream; len(p) > 0; p = p[min(len(p), readBufferSize):] {
		if _, err := c.Write(p[:min(len(p), readBufferSize)]); err != nil {
			t.Fatal(err)
		}
		if len(c.held) >= len(secret) {
			t.Fatalf("%d bytes held back after a write, want fewer than the secret's %d", len(c.held), len(secret))
		}
	}
	if live.Len() < len(stream)-len(secret) || bytes.ContainsRune(live.Bytes(), 'a') {
		t.Fatalf("live: %d bytes before the end, %d of them unmasked", live.Len(), bytes.Count(live.Bytes(), []byte("a")))
	}
	if out := c.output(); !bytes.Equal(out.Content, bytes.Repeat([]byte("*"), len(stream))) {
		t.Fatalf("kept %d bytes, %d unmasked", len(out.Content), bytes.Count(out.Content, []byte("a")))
	}
}
