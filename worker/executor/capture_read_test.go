package executor

import (
	"bytes"
	"runtime"
	"sync"
	"testing"
)

// streamByte is byte i of the streams these tests write: every offset has
// its own byte within 251, so a byte read at the wrong place shows.
func streamByte(i int64) byte { return byte('!' + i%251%90) }

func streamOf(from, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = streamByte(from + int64(i))
	}
	return b
}

// readAll reads a capture as the live output's republish does: from
// offset 0, each read where the last ended, a jump where the capture no
// longer holds the bytes, until it holds none more; the runs it read.
func readAll(c *capture, buf []byte) (runs [][2]int64, got []byte) {
	off := int64(0)
	for {
		from, n := c.readAt(buf, off)
		if n == 0 {
			return runs, got
		}
		if k := len(runs); k > 0 && runs[k-1][1] == from {
			runs[k-1][1] = from + int64(n)
		} else {
			runs = append(runs, [2]int64{from, from + int64(n)})
		}
		got = append(got, buf[:n]...)
		off = from + int64(n)
	}
}

// TestCaptureReadAtIsTheStreamAsTheResultKeepsIt: readAt gives the whole
// stream up to the cap, and past it the head and then the ring's bytes
// from where the ring starts, in stream order whichever way the ring
// turned: the bytes and the places of the stored result (head, marker,
// tail), at every size and with reads of any size, so that a live output
// published again from it has a hole only where the result has its
// marker.
func TestCaptureReadAtIsTheStreamAsTheResultKeepsIt(t *testing.T) {
	t.Parallel()
	const limit = 1001 // head 500, ring 501
	for _, size := range []int64{0, 1, 499, 500, 1000, 1001, 1002, 1500, 1501, 1502, 2003, 7777} {
		for _, chunk := range []int{1, 7, 64, 501, 4096} {
			for _, read := range []int{1, 13, 500, 2048} {
				c := newCapture("stdout", limit, nil)
				chunked(t, c, streamOf(0, size), []int{chunk})
				runs, got := readAll(c, make([]byte, read))
				var want [][2]int64
				switch {
				case size == 0:
				case size <= limit:
					want = [][2]int64{{0, size}}
				default:
					want = [][2]int64{{0, limit / 2}, {size - (limit - limit/2), size}}
				}
				if !equalRuns(runs, want) {
					t.Fatalf("%d bytes written %d at a time, read %d at a time: runs %v, want %v", size, chunk, read, runs, want)
				}
				var wantBytes []byte
				for _, r := range want {
					wantBytes = append(wantBytes, streamOf(r[0], r[1]-r[0])...)
				}
				if !bytes.Equal(got, wantBytes) {
					t.Fatalf("%d bytes written %d at a time, read %d at a time: not the stream's bytes at those offsets", size, chunk, read)
				}
				if out := c.output(); size > limit {
					head, tail := int(limit/2), int(limit-limit/2)
					if !out.Truncated || !bytes.Equal(out.Content[:head], got[:head]) || !bytes.Equal(out.Content[len(out.Content)-tail:], got[head:]) {
						t.Fatalf("%d bytes: the result's head and tail are not what readAt gave", size)
					}
				} else if !bytes.Equal(out.Content, got) {
					t.Fatalf("%d bytes: the result is not what readAt gave", size)
				}
			}
		}
	}
}

func equalRuns(a, b [][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCaptureReadAtWhileTheRingTurns: a reader follows a stream while it
// is written far past the cap, so the ring turns under it many times:
// every byte it is given is the stream's byte at the offset readAt says,
// never one half overwritten by a later write (readAt copies under the
// capture's lock; run with -race, an unlocked read is reported too).
func TestCaptureReadAtWhileTheRingTurns(t *testing.T) {
	t.Parallel()
	const limit, total = 64 << 10, 8 << 20
	c := newCapture("stdout", limit, nil)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for off := int64(0); off < total; off += 3000 {
			_, _ = c.Write(streamOf(off, min(3000, total-off)))
		}
	})
	buf := make([]byte, 8<<10)
	reads := 0
	for off, finished := int64(0), false; !finished; {
		select {
		case <-done:
			finished = true // one read more, of what it holds at the end
		default:
		}
		from, n := c.readAt(buf, off)
		if from < off {
			t.Fatalf("readAt(%d) answered from %d, before it", off, from)
		}
		if !bytes.Equal(buf[:n], streamOf(from, int64(n))) {
			t.Fatalf("readAt(%d) gave %d bytes from %d that are not the stream's there: read while overwritten", off, n, from)
		}
		if n == 0 {
			runtime.Gosched() // the writer's turn
			continue
		}
		reads++
		off = from + int64(n)
	}
	wg.Wait()
	if reads < 2 {
		t.Fatalf("%d reads with bytes: the reader did not follow the writes", reads)
	}
}
