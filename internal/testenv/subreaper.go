package testenv

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Subreaper reports the test process's child subreaper flag
// (PR_GET_CHILD_SUBREAPER): set by an adopting worker, which clears it
// when it stops.
func Subreaper(t testing.TB) bool {
	t.Helper()
	var v int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&v)), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	return v != 0
}

// Orphan starts `sleep secs` whose parent shell exits at once, and
// returns the sleep's pid once the shell is reaped: the sleep is an
// orphan by then, re-parented to the nearest subreaper or init.
func Orphan(t testing.TB, secs string) int {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", "sleep "+secs+" </dev/null >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
