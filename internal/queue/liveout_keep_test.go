package queue

import (
	"bytes"
	"runtime"
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
	if want := liveKeepMax / (size + liveChunkCost); len(s.kept) != want || s.first != n-want {
		t.Fatalf("kept %d chunks after %d dropped, want the last %d after %d", len(s.kept), s.first, want, n-want)
	}
	sum := 0
	for k, c := range s.kept {
		i := s.first + k
		if c.offset != int64(i*size) || c.data[0] != byte(i) {
			t.Fatalf("kept[%d] is the chunk at %d (byte %d), want chunk %d", k, c.offset, c.data[0], i)
		}
		sum += liveChunkCost + len(c.data)
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

// TestLiveOutputKeepsTheLastMiBOfSmallChunksInAboutAMiB: the bound is on
// the memory kept, not on the bytes of output alone. Chunks of one byte
// each (a command printing a dot at a time: each read of its pipe is a
// chunk) were kept by the million under a bound that counted their
// bytes: 2 Mi of them kept 1 Mi chunks, 68 MiB, where a ?wait on 10 MiB
// of kept output may take 80 MiB of serve in all (docs/benchmarks.md).
func TestLiveOutputKeepsTheLastMiBOfSmallChunksInAboutAMiB(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := &liveState{}
	for i := range 2 << 20 {
		s.keep(liveChunk{stream: "stdout", offset: int64(i), data: bytes.Clone([]byte{'.'})})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(s)
	// Twice the bound and some: the slice's spare capacity (append
	// doubles it).
	if held > 2*liveKeepMax+liveKeepMax/2 {
		t.Fatalf("2 Mi chunks of a byte each: %d chunks kept, %.1f MiB held; want about the bound of %d KiB",
			len(s.kept), float64(held)/(1<<20), liveKeepMax>>10)
	}
	if last := s.kept[len(s.kept)-1]; last.offset != 2<<20-1 {
		t.Fatalf("the last chunk kept is at %d, want the last published", last.offset)
	}
	t.Logf("%d chunks kept, %.2f MiB held", len(s.kept), float64(held)/(1<<20))
}
