package executor

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSpilledCaptureIsTheCaptureInMemory: a capture that moved its bytes
// to a file past spillFrom keeps, reads back (readAt, as the live
// output's republish does) and hands over the same stream as one that
// kept them in memory, within the cap and past it (the ring turned), in
// writes of any size; and the content of one within the cap stays in the
// file (Content nil, spilled), which holds it whole.
func TestSpilledCaptureIsTheCaptureInMemory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const limit = 3<<20 + 7 // past spillFrom; odd, so head and ring differ
	for _, size := range []int64{spillFrom, spillFrom + 1, 2<<20 + 3, limit, limit + 1, limit + 65537, 9<<20 + 11} {
		for _, chunk := range []int{4093, 1 << 20} {
			mem := newCapture("stdout", limit, nil)
			sp := newCapture("stdout", limit, nil)
			sp.spillDir = dir
			stream := streamOf(0, size)
			chunked(t, mem, stream, []int{chunk})
			chunked(t, sp, stream, []int{chunk})
			if size > spillFrom && sp.spill == nil {
				t.Fatalf("size %d: the capture did not spill", size)
			}
			if size > spillFrom && sp.kept != nil {
				t.Fatalf("size %d: a spilled capture holds %d bytes in memory", size, len(sp.kept))
			}
			buf := make([]byte, 100003)
			mruns, mgot := readAll(mem, buf)
			sruns, sgot := readAll(sp, buf)
			if !slicesEqual(mruns, sruns) || !bytes.Equal(mgot, sgot) {
				t.Fatalf("size %d chunk %d: readAt read runs %v, in memory %v (bytes equal: %v)", size, chunk, sruns, mruns, bytes.Equal(mgot, sgot))
			}
			mout, sout := mem.output(), sp.output()
			content := sout.Content
			if s := sp.spilled(); s != nil {
				if sout.Content != nil {
					t.Fatalf("size %d: a spilled output has Content too", size)
				}
				content = make([]byte, s.Size())
				if _, err := s.ReadAt(content, 0); err != nil && err != io.EOF {
					t.Fatal(err)
				}
				_ = s.Close()
			} else if size <= limit && size > spillFrom {
				t.Fatalf("size %d: within the cap, the output left its file", size)
			}
			if !bytes.Equal(content, mout.Content) || sout.Bytes != mout.Bytes || sout.Truncated != mout.Truncated ||
				!bytes.Equal(sout.SHA256, mout.SHA256) {
				t.Fatalf("size %d chunk %d: spilled output differs (len %d, truncated %v) from the one in memory (len %d, truncated %v)",
					size, chunk, len(content), sout.Truncated, len(mout.Content), mout.Truncated)
			}
		}
	}
}

func slicesEqual(a, b [][2]int64) bool {
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

// TestTenMiBOfOutputStaysOutOfTheHeap: while a real process writes 10
// MiB under a 10 MiB cap, the executor's heap holds little more than
// before it started (a capture held the whole 10 MiB from its first MiB
// on, the copy that took serve's `?wait` peak to its memory limit); the
// output is in a file nobody can open by a name (unlinked from the
// start, mode 0600), handed over whole in Result.StdoutSpill, and gone
// once closed. The heap is read after collections (runtime.ReadMemStats),
// from OnOutput once 9 MiB came: no timing.
func TestTenMiBOfOutputStaysOutOfTheHeap(t *testing.T) {
	const size = 10 << 20
	dir := t.TempDir()
	req := sh("head -c " + strconv.Itoa(size) + " /dev/zero")
	req.MaxOutput = size
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var (
		mu       sync.Mutex
		seen     int
		during   uint64
		spillFD  string
		spillMod uint32
	)
	var cp Captured
	req.Captured = &cp
	req.OnOutput = func(stream string, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		seen += len(p)
		if during == 0 && seen >= 9<<20 {
			during = heap()
			if s := cp.stdout.spill; s != nil {
				spillFD, _ = os.Readlink("/proc/self/fd/" + strconv.Itoa(int(s.f.Fd())))
				var st unix.Stat_t
				if unix.Fstat(int(s.f.Fd()), &st) == nil {
					spillMod = st.Mode & 0o7777
				}
			}
		}
	}
	ex := newTestExecutor(t)
	ex.SpillTo(dir)
	before := heap()
	res := ex.Run(t.Context(), req, nil)
	if exitCode(t, res) != 0 {
		t.Fatalf("head failed: %s", res.Stderr.Content)
	}
	mu.Lock()
	defer mu.Unlock()
	if during == 0 {
		t.Fatalf("OnOutput saw %d bytes, never 9 MiB", seen)
	}
	grew := int64(during) - int64(before)
	t.Logf("heap before the order %.2f MiB, with 9 MiB of its output captured %.2f MiB (%+.2f)",
		float64(before)/(1<<20), float64(during)/(1<<20), float64(grew)/(1<<20))
	if grew > 3<<20 {
		t.Errorf("the heap grew by %.2f MiB while the order printed 9 MiB: the capture holds its output in memory", float64(grew)/(1<<20))
	}
	if !strings.HasPrefix(spillFD, dir+"/") || !strings.HasSuffix(spillFD, "(deleted)") {
		t.Errorf("the spill file is %q: want an unnamed file in %s", spillFD, dir)
	}
	if spillMod != 0o600 {
		t.Errorf("the spill file's mode is %o, want 600", spillMod)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the spill directory holds %d entries, want none", len(entries))
	}
	s := res.StdoutSpill
	if s == nil || res.Stdout.Content != nil {
		t.Fatalf("the output is not handed over in its file (spill %v, Content %d bytes)", s, len(res.Stdout.Content))
	}
	got := make([]byte, s.Size())
	if _, err := s.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); s.Size() != size || res.Stdout.Bytes != size || !bytes.Equal(sum[:], res.Stdout.SHA256) {
		t.Fatalf("the file holds %d bytes, SHA-256 %x; the output is %d bytes, %x", s.Size(), sum, res.Stdout.Bytes, res.Stdout.SHA256)
	}
	fd := int(s.f.Fd())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil {
		if l, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); l == spillFD {
			t.Errorf("the spill file is still open after Close")
		}
	}
}
