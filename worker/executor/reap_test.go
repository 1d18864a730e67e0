package executor

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReapDeadWorker is issue 7 item 4: a worker dies (kill -9) or freezes
// (SIGSTOP) while its order runs; the order's other processes live on, and
// Reap, as the worker taking over would call it, kills them and verifies
// that nothing of the group is left.
func TestReapDeadWorker(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		freeze bool
	}{
		{"kill -9", false},
		{"SIGSTOP", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fo := startFakeWorker(t, "sleep 100 & echo $!; sleep 100 & echo $!; echo ready; wait", "")
			if tt.freeze {
				if err := fo.worker.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = fo.worker.Process.Signal(syscall.SIGCONT) })
			} else {
				fo.kill9(t)
			}
			for _, pid := range fo.pids {
				if !processAlive(pid) {
					t.Fatalf("child %d died with the worker: nothing left to reap", pid)
				}
			}
			res := Reap(t.Context(), fo.process, newTestLogger(t))
			if res.Err != nil || !res.Found || res.Verified != VerifiedGroup {
				t.Fatalf("Reap = %+v, want found and verified by group", res)
			}
			for _, pid := range fo.pids {
				if !slices.Contains(res.Killed, pid) {
					t.Errorf("Killed = %v, missing %d", res.Killed, pid)
				}
				if processAlive(pid) {
					t.Errorf("process %d survived Reap", pid)
				}
			}
			if live := liveInGroup(t, fo.process.PGID); len(live) > 0 {
				t.Errorf("processes of group %d survive:\n%s", fo.process.PGID, strings.Join(live, "\n"))
			}
			again := Reap(t.Context(), fo.process, newTestLogger(t))
			if again.Err != nil || again.Found || again.Verified != VerifiedGroup {
				t.Errorf("second Reap = %+v, want nothing found, verified by group", again)
			}
		})
	}
}

func newTestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startGroup starts script in a new session (or only a new group) outside
// the executor and returns the leader's record as the executor would have
// made it, and the pids the script printed.
func startGroup(t *testing.T, script string, setsid bool) (*exec.Cmd, Process, []int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid, Setpgid: !setsid}
	var out bytes.Buffer
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	pid := cmd.Process.Pid
	st, err := readStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := readBootID()
	if err != nil {
		t.Fatal(err)
	}
	p := Process{PID: pid, PGID: pid, StartTime: st.startTime, BootID: boot}
	var pids []int
	buf := make([]byte, 64)
	for !bytes.Contains(out.Bytes(), []byte("ready\n")) {
		n, err := r.Read(buf) // returns at the latest when the script exits
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	r.Close()
	for line := range strings.SplitSeq(out.String(), "\n") {
		if line != "ready" && line != "" {
			pids = append(pids, firstLinePID(t, []byte(line)))
		}
	}
	t.Cleanup(func() {
		for _, pid := range append(pids, p.PID) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		_ = cmd.Wait()
	})
	return cmd, p, pids
}

// TestReapNeverKillsAnotherGroup gives Reap records that do not match the
// processes now using the pid: nothing may be signalled.
func TestReapNeverKillsAnotherGroup(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		// setsid: the group is also a session, as the executor makes it.
		setsid bool
		// leaderExits: the leader is gone (reaped) and only members
		// hold the group id.
		leaderExits bool
		edit        func(p *Process, member procStat)
		verified    string
	}{
		{"pid reused: leader's start time differs", true, false,
			func(p *Process, _ procStat) { p.StartTime-- }, VerifiedGroup},
		{"pid reused: leader's start time differs, later", true, false,
			func(p *Process, _ procStat) { p.StartTime++ }, VerifiedGroup},
		{"group id reused: members older than the recorded leader", true, true,
			func(p *Process, m procStat) { p.StartTime = m.startTime + 1 }, VerifiedGroup},
		{"group id reused: members of another session", false, true,
			func(*Process, procStat) {}, VerifiedGroup},
		{"another boot", true, false,
			func(p *Process, _ procStat) { p.BootID = "00000000-0000-0000-0000-000000000000" }, VerifiedReboot},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			script := "sleep 100 & echo $!; echo ready; exec sleep 100"
			if tt.leaderExits {
				script = "sleep 100 & echo $!; echo ready"
			}
			cmd, p, pids := startGroup(t, script, tt.setsid)
			if tt.leaderExits {
				if err := cmd.Wait(); err != nil {
					t.Fatal(err)
				}
			}
			member, err := readStat(pids[0])
			if err != nil {
				t.Fatal(err)
			}
			tt.edit(&p, member)
			res := Reap(t.Context(), p, newTestLogger(t))
			if res.Err != nil || res.Found || len(res.Killed) > 0 || res.Verified != tt.verified {
				t.Errorf("Reap = %+v, want nothing found or killed, verified by %s", res, tt.verified)
			}
			alive := pids
			if !tt.leaderExits {
				alive = append(alive, p.PID)
			}
			for _, pid := range alive {
				if !processAlive(pid) {
					t.Errorf("Reap killed %d, which was not the order's", pid)
				}
			}
		})
	}
}

func TestReapRefusesUnsafeRecords(t *testing.T) {
	t.Parallel()
	boot, err := readBootID()
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	for _, p := range []Process{
		{PID: 0, PGID: 0, BootID: boot},                                        // kill(-0): our own group
		{PID: 1, PGID: 1, BootID: boot},                                        // kill(-1): everything
		{PID: self, PGID: self, BootID: boot},                                  // ourselves
		{PID: self + 1, PGID: self + 2, BootID: boot},                          // not a group leader
		{PID: 4242, PGID: 4242},                                                // no boot id
		{PID: 4242, PGID: 4242, BootID: "other", MachineID: "another-machine"}, // not a reboot: another machine
		{PID: 4242, PGID: 4242, BootID: boot, PidNS: 1},                        // another pid namespace
	} {
		if res := Reap(t.Context(), p, newTestLogger(t)); res.Err == nil || res.Found || res.Verified != "" {
			t.Errorf("Reap(%+v) = %+v, want a refusal", p, res)
		}
	}
}

// TestReapDeadWorkerSessionsOtherGroup: a process of the order that moved
// to a process group of its own (setpgid) stays in the order's session,
// and the worker taking over kills it too.
func TestReapDeadWorkerSessionsOtherGroup(t *testing.T) {
	t.Parallel()
	fo := startFakeWorker(t, `perl -e '$| = 1; setpgrp(0, 0); print "$$\n"; exec "sleep", "100"' & sleep 100 & echo $!; sleep 0.5; echo ready; wait`, "")
	fo.kill9(t)
	t.Cleanup(func() {
		for _, pid := range fo.pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	})
	if len(fo.pids) != 2 {
		t.Fatalf("script printed pids %v, want two", fo.pids)
	}
	moved := -1
	for _, pid := range fo.pids {
		st, err := readStat(pid)
		if err != nil || !st.alive() {
			t.Fatalf("child %d died with the worker: nothing left to reap", pid)
		}
		if st.pgrp != fo.process.PGID {
			moved = pid
		}
	}
	if moved < 0 {
		t.Fatal("no child left the order's group: the test did not test a move")
	}
	res := Reap(t.Context(), fo.process, newTestLogger(t))
	if res.Err != nil || !res.Found || res.Verified != VerifiedGroup {
		t.Fatalf("Reap = %+v, want found and verified by group", res)
	}
	for _, pid := range fo.pids {
		if !slices.Contains(res.Killed, pid) {
			t.Errorf("Killed = %v, missing %d", res.Killed, pid)
		}
		if processAlive(pid) {
			t.Errorf("process %d survived Reap", pid)
		}
	}
}

// TestReapKillsAMemberItCannotRead: the successor's reap of an order's
// session (reapGroup, from its record) skipped a process whose stat
// could not be read, as the executor's own kill did: a member of the
// session in a group of its own whose /proc entry is refused lived on,
// and the reap was reported verified. Now getsid places it: in the
// order's session, shown to be the order's by its leader (its start
// time), it is killed by its pid; with nothing to show the session is
// the order's (the leader reaped, no other member readable), the reap
// is an error and nothing is signalled. A test's look refuses here what
// the kernel would refuse a worker that is not root (hidepid, a member
// that changed its credentials).
func TestReapKillsAMemberItCannotRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		leaderGone bool // the leader killed and reaped before the reap
		wantKilled bool
	}{
		{"leader_there", false, true},
		{"leader_gone", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, p, pids := startGroup(t, `exec /bin/bash -c 'set -m; sleep 100 </dev/null >/dev/null 2>&1 & echo $!; echo ready; wait'`, true)
			if len(pids) != 1 {
				t.Fatalf("script printed pids %v, want one", pids)
			}
			member := pids[0]
			if st, err := readStat(member); err != nil || st.session != p.PGID || st.pgrp == p.PGID {
				t.Fatalf("the member %d: %+v %v, want of session %d in a group of its own", member, st, err, p.PGID)
			}
			if tc.leaderGone {
				_ = unix.Kill(p.PID, unix.SIGKILL)
				_ = cmd.Wait()
			}
			look := procLook{getsid: unix.Getsid, stat: refuseFor(member, &os.PathError{Op: "open", Path: fmt.Sprintf("/proc/%d/stat", member), Err: unix.EPERM})}
			res := reapGroup(p, look)
			if alive := processAlive(member); alive == tc.wantKilled {
				t.Fatalf("reapGroup = %+v; the member alive: %v, want killed: %v", res, alive, tc.wantKilled)
			}
			if tc.wantKilled && (res.Err != nil || res.Verified != VerifiedGroup || !slices.Contains(res.Killed, member)) {
				t.Errorf("reapGroup = %+v, want verified by group, the member among the killed", res)
			}
			if !tc.wantKilled && (res.Err == nil || res.Verified != "") {
				t.Errorf("reapGroup = %+v, want an error, unverified", res)
			}
		})
	}
}
