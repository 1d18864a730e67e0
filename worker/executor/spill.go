package executor

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// spillFrom is the kept size of one stream past which its capture moves
// what it keeps to a file (Spill) rather than hold it in the worker's
// heap: the size from which the result write streams an output too
// (internal/postgres stageOutputsFrom), so a spilled output is read from
// the file into PostgreSQL, 64 KiB at a time, and never held whole. In
// serve the worker shares its heap with the API and the embedded NATS
// server, whose live stream holds the same output again for followers
// while the order runs: 10 MiB kept took the heap to the memory limit, and
// a `?wait` on it to the 80 MiB target (docs/benchmarks.md, "thirty-second
// round: memory").
const spillFrom = growFullFrom

// Spill is a captured stream's kept bytes in a file of their own: an
// unnamed temporary file (O_TMPFILE), created 0600 in the worker's
// temporary directory and never linked, so nobody can open it by a name,
// nothing of it is left on disk by a worker that dies (the kernel frees it
// with the last descriptor), and there are no leftovers to remove at a
// start. Close frees it; the worker closes it once the order's result is
// written.
type Spill struct {
	f    *os.File
	size int64
}

// openSpill creates a Spill in dir. A file system without O_TMPFILE
// (EOPNOTSUPP, EISDIR on an old kernel) is an error: the capture then
// keeps its bytes in memory, as it did before spilling.
func openSpill(dir string) (*Spill, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open a temporary file in %s: %w", dir, err)
	}
	return &Spill{f: os.NewFile(uintptr(fd), dir+"/(spilled output)")}, nil
}

// Size is how many bytes the stream's content (Content of its Output) is.
func (s *Spill) Size() int64 { return s.size }

// ReadAt reads the content's bytes at off, as io.ReaderAt.
func (s *Spill) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// Close frees the file. Safe to call more than once.
func (s *Spill) Close() error {
	if err := s.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
