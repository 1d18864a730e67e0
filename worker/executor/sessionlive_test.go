package executor

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSessionLiveCountsAnUnreadableMemberLive: sessionLive, which
// sessionEnded asks round after round, counts a member of the session
// whose stat cannot be read for another reason than that it is gone (a
// refused read, a format it does not know) as live, as sessionEnded's
// comment says of a failed read: the order's record then goes on its
// own, never a process uncounted. A member gone since its getsid is not
// live, and a pid of another session is never read. Before, any failed
// read counted the member as dead.
func TestSessionLiveCountsAnUnreadableMemberLive(t *testing.T) {
	// A session whose leader waits for its member, a sleep.
	memberFile := filepath.Join(t.TempDir(), "member")
	cmd := exec.Command("/bin/sh", "-c", `sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$1"; wait`, "_", memberFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sid := cmd.Process.Pid
	member := pidIn(t, memberFile)
	t.Cleanup(func() {
		_ = syscall.Kill(member, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	if s, err := unix.Getsid(os.Getpid()); err != nil || s == sid {
		t.Fatalf("the test's own session %d (%v) is the member's", s, err)
	}

	refused := func(pid int) (procStat, error) {
		return procStat{}, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", pid), Err: unix.EACCES}
	}
	for _, tc := range []struct {
		name string
		pid  int
		stat func(int) (procStat, error)
		want bool
	}{
		{"read", member, readStat, true},
		{"read refused", member, refused, true},
		{"format unknown", member, func(pid int) (procStat, error) {
			return procStat{}, fmt.Errorf("parse /proc/%d/stat: unexpected format %q", pid, "?")
		}, true},
		{"gone since its getsid", member, func(pid int) (procStat, error) {
			return procStat{}, fmt.Errorf("%w: %w", fs.ErrNotExist, unix.ESRCH)
		}, false},
		{"a zombie", member, func(pid int) (procStat, error) { return procStat{state: 'Z', session: sid}, nil }, false},
		{"of another session", os.Getpid(), refused, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sessionLive(sid, []int{tc.pid}, tc.stat); got != tc.want {
				t.Errorf("sessionLive(%d, [%d]) = %v, want %v", sid, tc.pid, got, tc.want)
			}
		})
	}
}
