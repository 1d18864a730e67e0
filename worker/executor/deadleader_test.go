package executor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/testenv"
)

// deadLeaderEnv, set to a file's path, makes the test binary (TestMain) a
// process whose main thread ends alone while its other threads (the Go
// runtime's) run on (deadLeader): its stat says Z, and it lives.
const deadLeaderEnv = "ORDERLY_EXECUTOR_TEST_DEAD_LEADER"

// init keeps the test binary's main goroutine on the main thread when it
// is to be a dead leader: only a lock taken during initialization holds
// into main (runtime.LockOSThread), and TestMain's goroutine, unlocked,
// was on another thread at times under load, where deadLeader could not
// end the main one.
func init() {
	if os.Getenv(deadLeaderEnv) != "" {
		runtime.LockOSThread()
	}
}

// deadLeader writes its pid to marker, then ends its main thread with
// exit(2), which ends one thread, not exit_group(2): the thread group
// lives on in the runtime's other threads, its leader a zombie that
// waitid cannot reap until they end.
func deadLeader(marker string) int {
	if unix.Gettid() != unix.Getpid() {
		fmt.Fprintln(os.Stderr, "dead leader: the main goroutine is not on the main thread")
		return 1
	}
	if err := os.WriteFile(marker, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "dead leader:", err)
		return 1
	}
	_, _, _ = unix.Syscall(unix.SYS_EXIT, 0, 0, 0)
	return 1 // not reached: the thread is gone
}

// deadLeaderPid is the pid a dead leader wrote to marker while the order
// res ran.
func deadLeaderPid(t *testing.T, marker string, res Result) int {
	t.Helper()
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatalf("the process wrote no pid: %v; result %+v", err, res)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("the process wrote %q", b)
	}
	return pid
}

// deadLeaderAdoptEnv marks the run of the test binary in which
// TestAdoptedProcessWhoseLeaderDiedFirstIsEnded makes itself a child
// subreaper.
const deadLeaderAdoptEnv = "ORDERLY_EXECUTOR_TEST_DEAD_LEADER_ADOPT"

// TestAdoptedProcessWhoseLeaderDiedFirstIsEnded: an order's escapee
// (setsid, no pipe of the order's) whose main thread has exited while its
// other threads run on reads as a zombie in its stat, and waitid cannot
// reap it: the kernel keeps a thread group's dead leader until its last
// thread ends. Its threads are not the worker's children (waitid answers
// ECHILD for them), so the adopting worker's look at its children
// (endAdopted) saw a dead child it could not reap, skipped it, and said
// every orphan was gone while the process ran on. It must be ended (a
// SIGKILL to its pid ends every thread) and reaped at the order's end.
func TestAdoptedProcessWhoseLeaderDiedFirstIsEnded(t *testing.T) {
	runInOwnProcess(t, deadLeaderAdoptEnv, testAdoptedProcessWhoseLeaderDiedFirstIsEnded)
}

func testAdoptedProcessWhoseLeaderDiedFirstIsEnded(t *testing.T) {
	e := New(nil)
	if err := e.AdoptOrphans(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.StopAdopting() }()
	marker := filepath.Join(t.TempDir(), "pid")
	script := fmt.Sprintf(`env %s=%s setsid %s </dev/null >/dev/null 2>&1 &
while [ ! -s %[2]s ]; do sleep 0.01; done`, deadLeaderEnv, marker, os.Args[0])
	res := e.Run(t.Context(), sh(script), nil)
	pid := deadLeaderPid(t, marker, res)
	if st, err := readStat(pid); err == nil {
		threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
		reapChild(pid)
		t.Fatalf("the escapee %d outlived the order: state %c, %d threads; result: adopted %d, group gone %v, escaped %v",
			pid, st.state, len(threads), res.Adopted, res.GroupGone, res.Escaped)
	}
	if res.ExitCode == nil || *res.ExitCode != 0 || res.StartErr != nil {
		t.Fatalf("result %+v", res)
	}
	if res.Adopted != 1 || res.Verified != VerifiedSubreaper || res.Escaped || !res.GroupGone {
		t.Errorf("adopted %d, verified %q, escaped %v, group gone %v; want 1, %q, false, true",
			res.Adopted, res.Verified, res.Escaped, res.GroupGone, VerifiedSubreaper)
	}
}

// TestRunKillsASessionsProcessWhoseLeaderDiedFirst: a process of the
// order's session in a group of its own (job control) whose main thread
// has exited while its other threads run on reads as a zombie in its
// stat. Where many pids were handed out since the order's leader (a busy
// host; here the order forks 80 more), the look at the session lists
// /proc, which names thread groups, not threads: the process was taken
// for dead, its group never signalled, and it ran on past the order's
// end, which said its group gone. With few pids, the look reads each
// pid, its threads' ids included, and killed it through them.
func TestRunKillsASessionsProcessWhoseLeaderDiedFirst(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "pid")
	script := fmt.Sprintf(`set -m
env %s=%s %s </dev/null >/dev/null 2>&1 &
until [ -s %[2]s ]; do sleep 0.01; done
for i in $(seq 80); do /bin/true; done`, deadLeaderEnv, marker, os.Args[0])
	res := newTestExecutor(t).Run(t.Context(), baseRequest("/bin/bash", "-c", script), nil)
	pid := deadLeaderPid(t, marker, res)
	if runsOn(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("process %d of session %d, its leader thread dead, runs on past the order's end; group gone %v, verified %q",
			pid, res.Pid, res.GroupGone, res.Verified)
	}
	if exitCode(t, res) != 0 || !res.GroupGone {
		t.Errorf("exit %v, group gone %v", res.ExitCode, res.GroupGone)
	}
}

// TestReapKillsAProcessWhoseLeaderDiedFirst: a successor's reap of a
// dead worker's order (reapGroup) lists the order's session from /proc,
// which names thread groups, not threads. A process of the session in a
// group of its own whose main thread had exited while its other threads
// ran on read as a zombie there: its group was not signalled, and it
// outlived the reap, which said the order's processes were ended.
func TestReapKillsAProcessWhoseLeaderDiedFirst(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "pid")
	fo := startFakeWorker(t, fmt.Sprintf(`perl -e 'setpgrp(0, 0); exec @ARGV' env %s=%s %s </dev/null >/dev/null 2>&1 &
until [ -s %[2]s ]; do sleep 0.01; done; cat %[2]s; echo; echo ready; wait`, deadLeaderEnv, marker, os.Args[0]), "")
	fo.kill9(t)
	if len(fo.pids) != 1 {
		t.Fatalf("script printed pids %v, want one", fo.pids)
	}
	pid := fo.pids[0]
	t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	if st, err := readStat(pid); err != nil || st.alive() || !runsOn(pid) || st.pgrp == fo.process.PGID {
		t.Fatalf("process %d: stat %+v, %v, threads live %v: not a dead leader with live threads in a group of its own", pid, st, err, runsOn(pid))
	}
	res := Reap(t.Context(), fo.process, newTestLogger(t))
	if res.Err != nil || !res.Found {
		t.Fatalf("Reap = %+v", res)
	}
	if runsOn(pid) {
		t.Errorf("process %d outlived the reap (killed %v, verified %q)", pid, res.Killed, res.Verified)
	}
	if !slices.Contains(res.Killed, pid) {
		t.Errorf("Killed = %v, missing %d", res.Killed, pid)
	}
}

// runsOn reports whether process pid's threads other than its first
// live on (threadsLive, for the process pid names now).
func runsOn(pid int) bool {
	st, err := readStat(pid)
	return err == nil && threadsLive(pid, st.startTime)
}

// TestAZombiesPidTakenSinceIsNotAlive: the look at a session reads a
// member's stat, then, for a zombie, its threads (threadsLive). A zombie
// reaped in between and its pid handed to a new process with threads of
// its own (here this test's process, with the start time of an earlier
// one) had that process's threads read as the zombie's: the dead member
// was taken for alive, and a successor's reap reported its number killed.
func TestAZombiesPidTakenSinceIsNotAlive(t *testing.T) {
	self, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !runsOn(os.Getpid()) {
		t.Fatal("this test's process reads with no live thread but its first: the look cannot be tried")
	}
	zombie := procStat{state: 'Z', pgrp: self.pgrp, session: self.session, startTime: self.startTime - 1}
	if realLook.alive(os.Getpid(), zombie) {
		t.Fatalf("a zombie started at tick %d was taken for alive by the threads of process %d, started at tick %d, which has its pid now",
			zombie.startTime, os.Getpid(), self.startTime)
	}
}

// TestGoneIsNotAProcessWhoseMainThreadAloneExited: an owner whose main
// thread exited while its other threads run on reads Z in its stat, and
// lives: Gone took it for exited, as it took any zombie, and a worker
// would have taken the lease its live threads renew. Here the owner is
// this test binary made a dead leader (deadLeader).
func TestGoneIsNotAProcessWhoseMainThreadAloneExited(t *testing.T) {
	self, err := Self()
	if err != nil || self.PidNS == 0 {
		t.Fatalf("this process: %+v, %v", self, err)
	}
	marker := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), deadLeaderEnv+"="+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	var st procStat
	testenv.WaitUntil(t, 30*time.Second, "the main thread of the owner exits", func() bool {
		st, err = readStat(pid)
		return err == nil && !st.alive()
	})
	if !runsOn(pid) {
		t.Fatalf("process %d: stat %+v: its other threads do not run on", pid, st)
	}
	owner := Process{PID: pid, StartTime: st.startTime, BootID: self.BootID, PidNS: self.PidNS}
	if Gone(owner) {
		t.Fatalf("a live owner whose main thread alone exited (%+v) was judged gone", owner)
	}
}
