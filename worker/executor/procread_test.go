package executor

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

// readProcFile reads what os.ReadFile reads, through a buffer shorter than
// the file too, and fails the same way for a process that is not there.
func TestReadProcFileMatchesReadFile(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/proc/self/status", "/proc/loadavg"} {
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{8, 4096} {
			got, err := readProcFile(path, make([]byte, size))
			if err != nil {
				t.Fatalf("readProcFile(%s, %d bytes): %v", path, size, err)
			}
			// /proc/self/status changes between reads only in its
			// counters; the name line does not.
			if path == "/proc/loadavg" && size == 4096 {
				continue // the load moves between two reads
			}
			if len(got) < 5 || string(got[:5]) != string(want[:5]) {
				t.Errorf("readProcFile(%s, %d bytes) = %.40q, want %.40q", path, size, got, want)
			}
		}
	}
	if _, err := readStat(1 << 30); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("readStat of a pid that cannot exist: %v, want fs.ErrNotExist", err)
	}
	st, err := readStat(os.Getpid())
	if err != nil || st.pgrp != syscall.Getpgrp() || !st.alive() {
		t.Errorf("readStat(self) = %+v, %v", st, err)
	}
}

// BenchmarkReadStat: allocations per /proc/<pid>/stat read, on every
// order's path (identify; sessionGroups when the order's session may have
// forked).
func BenchmarkReadStat(b *testing.B) {
	pid := os.Getpid()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readStat(pid); err != nil {
			b.Fatal(err)
		}
	}
}

// Streams an order does not ask for are /dev/null: stdin read-only (EOF),
// stdout and stderr write-only, order after order on the process's shared
// descriptors (devNull), which no order may close.
func TestRunUnwantedStreamsAreDevNull(t *testing.T) {
	t.Parallel()
	e := newTestExecutor(t)
	for i := range 3 {
		req := sh(`readlink /proc/self/fd/0 /proc/self/fd/9 9>&1 >&2
if [ -n "$(cat)" ]; then echo stdin-not-empty >&2; fi
if (echo x >&0) 2>/dev/null; then echo stdin-writable >&2; fi
if cat <&1 >/dev/null 2>&1; then echo stdout-readable >&2; fi
echo to-nowhere`)
		req.CaptureStdout = false
		res := e.Run(t.Context(), req, nil)
		if exitCode(t, res) != 0 {
			t.Fatalf("run %d: exit %v: %s", i, res.ExitCode, res.Stderr.Content)
		}
		if got := string(res.Stderr.Content); got != "/dev/null\n/dev/null\n" {
			t.Errorf("run %d: stderr %q, want fd 0 and 1 on /dev/null, stdin read-only and empty, stdout write-only", i, got)
		}
	}
}
