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
