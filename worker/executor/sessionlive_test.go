package executor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
// read counted the member as dead. A member whose stat is not there but
// which getsid still finds is hidden, not gone (a /proc mounted with
// hidepid=2, a member that changed its credentials): live.
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

	gone := false // a getsid that answers ESRCH after the member's stat
	getsid := func(pid int) (int, error) {
		if gone {
			return 0, unix.ESRCH
		}
		return unix.Getsid(pid)
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
			gone = true // getsid's next answer
			return procStat{}, fmt.Errorf("%w: %w", fs.ErrNotExist, unix.ESRCH)
		}, false},
		{"hidden", member, func(pid int) (procStat, error) {
			return procStat{}, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", pid), Err: unix.ENOENT}
		}, true},
		{"a zombie", member, func(pid int) (procStat, error) { return procStat{state: 'Z', session: sid}, nil }, false},
		{"of another session", os.Getpid(), refused, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone = false
			if got := sessionLive(sid, []int{tc.pid}, procLook{getsid: getsid, stat: tc.stat}); got != tc.want {
				t.Errorf("sessionLive(%d, [%d]) = %v, want %v", sid, tc.pid, got, tc.want)
			}
		})
	}
}

// TestKillSessionKillsAMemberItCannotRead: the kill of an order's
// session (killSession, through sessionGroups) skipped a member whose
// stat could not be read, the member sessionLive counts live: it was not
// killed and the session was reported gone, a process of the order left
// running. The kernel refuses a worker that is not root the /proc entry
// of a member that changed its credentials (a set-user-ID program) where
// /proc is mounted with hidepid (EPERM, or ENOENT when hidden); a
// security module may refuse getsid. The two now read a pid alike
// (readMember), and a test's look refuses here what the kernel would
// not. A member of the session (getsid says so) whose stat is refused or
// hidden is killed by its pid; a pid neither getsid nor stat can read
// is left alone (it may be another's), counted live by both, and the
// kill reported unproven.
func TestKillSessionKillsAMemberItCannotRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		getsid func(member int) func(int) (int, error)
		stat   func(member int) func(int) (procStat, error)
		killed bool
	}{
		{"stat refused", nil, func(member int) func(int) (procStat, error) {
			return refuseFor(member, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", member), Err: unix.EPERM})
		}, true},
		{"stat hidden", nil, func(member int) func(int) (procStat, error) {
			return refuseFor(member, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", member), Err: unix.ENOENT})
		}, true},
		{"neither read", func(member int) func(int) (int, error) {
			return func(pid int) (int, error) {
				if pid == member {
					return 0, unix.EPERM
				}
				return unix.Getsid(pid)
			}
		}, func(member int) func(int) (procStat, error) {
			return refuseFor(member, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", member), Err: unix.EACCES})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A session whose leader waits for its member, a sleep in
			// a process group of its own (bash's job control).
			memberFile := filepath.Join(t.TempDir(), "member")
			cmd := exec.Command("/bin/bash", "-c", `set -m; sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$1"; wait`, "_", memberFile)
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
			if st, err := readStat(member); err != nil || st.session != sid || st.pgrp == sid {
				t.Fatalf("the member %d: %+v %v, want of session %d in a group of its own", member, st, err, sid)
			}
			look := procLook{getsid: unix.Getsid, stat: tc.stat(member)}
			if tc.getsid != nil {
				look.getsid = tc.getsid(member)
			}

			// The look and the kill agree: live, and listed.
			if !sessionLive(sid, []int{member}, look) {
				t.Errorf("sessionLive: not live")
			}
			e := newTestExecutor(t)
			if _, live, _, _, err := e.sessionGroups(sid, nil, look); err != nil || !slices.Contains(live, member) {
				t.Errorf("sessionGroups: live %v (%v), want %d among them", live, err, member)
			}
			gone := e.killSession(t.Context(), sid, nil, look)
			st, err := readStat(member)
			dead := errors.Is(err, fs.ErrNotExist) || err == nil && !st.alive()
			if gone != tc.killed || dead != tc.killed {
				t.Fatalf("killSession = %v, the member dead: %v (%+v %v); want both %v", gone, dead, st, err, tc.killed)
			}
		})
	}
}

// refuseFor is readStat, but err for pid while it lives: once killed it
// reads as a zombie, which its parent (or init, here whatever the
// machine's PID 1 is) reaps when it will, and the test is not about that.
func refuseFor(pid int, err error) func(int) (procStat, error) {
	return func(p int) (procStat, error) {
		st, rerr := readStat(p)
		if p == pid && (rerr != nil || st.alive()) {
			return procStat{}, err
		}
		return st, rerr
	}
}
