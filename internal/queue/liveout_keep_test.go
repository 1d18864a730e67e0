package queue

import (
	"bytes"
	"testing"
)

// TestLiveOutputKeepsTheLastMiB: what a LiveOutput keeps to publish again
// after a NATS restart is bounded (liveKeepMax), the newest chunks in the
// order they came, and the count of those dropped says where they start;
// keeping every chunk up to the output cap took serve past the memory a
// ?wait on 10 MiB of output may take.
func TestLiveOutputKeepsTheLastMiB(t *testing.T) {
	s := &liveState{}
	const size = 32 << 10
	n := 3 * liveKeepMax / size // 3 MiB in 32 KiB chunks
	for i := range n {
		s.keep(liveChunk{stream: "stdout", offset: int64(i * size), data: bytes.Repeat([]byte{byte(i)}, size)})
	}
	if s.keptBytes > liveKeepMax {
		t.Fatalf("kept %d bytes, more than %d", s.keptBytes, liveKeepMax)
	}
	if want := liveKeepMax / size; len(s.kept) != want || s.first != n-want {
		t.Fatalf("kept %d chunks after %d dropped, want the last %d after %d", len(s.kept), s.first, want, n-want)
	}
	sum := 0
	for k, c := range s.kept {
		i := s.first + k
		if c.offset != int64(i*size) || c.data[0] != byte(i) {
			t.Fatalf("kept[%d] is the chunk at %d (byte %d), want chunk %d", k, c.offset, c.data[0], i)
		}
		sum += len(c.data)
	}
	if sum != s.keptBytes {
		t.Fatalf("keptBytes %d, the chunks hold %d", s.keptBytes, sum)
	}

	// A chunk larger than the bound is kept alone: the last one always is.
	s.keep(liveChunk{stream: "stderr", offset: 0, data: make([]byte, 2*liveKeepMax)})
	if len(s.kept) != 1 || s.kept[0].stream != "stderr" || s.first != n {
		t.Fatalf("after a chunk of 2 MiB: %d kept, %d dropped; want it alone after %d", len(s.kept), s.first, n)
	}
}
