package executor

import (
	"sync"
	"testing"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestPipeReadsFitALiveChunk: every piece OnOutput hands on, which the
// worker publishes as one live chunk, is at most queue.LiveChunkMax, so
// that the live stream holds it with its headers within 32 KiB; a process
// writing a MiB a write fills the pipe, so most reads are that large.
// Pieces of a whole 32 KiB took 40 KiB each in the stream (the headers
// pushed them past Go's largest size class).
func TestPipeReadsFitALiveChunk(t *testing.T) {
	t.Parallel()
	req := sh("dd if=/dev/zero bs=1048576 count=4 2>/dev/null")
	req.MaxOutput = 8 << 20
	var (
		mu      sync.Mutex
		largest int
		seen    int
	)
	req.OnOutput = func(stream string, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		largest, seen = max(largest, len(p)), seen+len(p)
	}
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 {
		t.Fatalf("dd failed: %s", res.Stderr.Content)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen != 4<<20 {
		t.Fatalf("OnOutput saw %d bytes, want 4 MiB", seen)
	}
	if largest > queue.LiveChunkMax {
		t.Errorf("a piece of %d bytes, more than queue.LiveChunkMax (%d)", largest, queue.LiveChunkMax)
	}
	if largest < queue.LiveChunkMax/2 {
		t.Errorf("the largest piece was %d bytes: the pipe was never read in full reads", largest)
	}
}
