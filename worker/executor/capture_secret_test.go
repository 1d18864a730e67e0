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
		c.secret = []byte(secret)
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
