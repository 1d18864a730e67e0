package executor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSessionEndedSeesAChildForkedDuringItsLook: without a cgroup, a
// leader that exited within ExitWait has its record put off to the
// result only when no process of its session is alive (sessionEnded). A
// member alive at the listing that forks a child and exits before its
// own /proc entry is read leaves the child, whose pid was handed out
// after the listing, to a later look: the look goes on over the pids
// handed out meanwhile, and finds it. Provoked where it matters, not
// hoped for: readProcFile's hook lets the member go at the open of its
// stat file and waits until it forked and died. Once the child is gone
// too, the session has ended.
func TestSessionEndedSeesAChildForkedDuringItsLook(t *testing.T) {
	dir := t.TempDir()
	fifo, memberFile, childFile := filepath.Join(dir, "go"), filepath.Join(dir, "member"), filepath.Join(dir, "child")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	e := New(nil)
	before := e.readPids()
	// The leader starts the member and exits; the member, told to go,
	// starts the child and exits.
	cmd := exec.Command("/bin/sh", "-c", `sh -c 'read x < "$1"; sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$2"' _ "$1" "$3" </dev/null >/dev/null 2>&1 &
echo $! > "$2"`, "_", fifo, memberFile, childFile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sid := cmd.Process.Pid
	if err := waitExitedNoReap(sid); err != nil {
		t.Fatal(err)
	}
	member := pidIn(t, memberFile)
	var child int
	t.Cleanup(func() {
		_ = syscall.Kill(member, syscall.SIGKILL)
		if child > 0 {
			_ = syscall.Kill(child, syscall.SIGKILL)
		}
		_ = cmd.Wait()
	})

	memberStat := "/proc/" + strconv.Itoa(member) + "/stat"
	fired := false
	procFileOpened = func(p string) {
		if p != memberStat || fired {
			return
		}
		fired = true
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = f.WriteString("go\n")
		_ = f.Close()
		child = pidIn(t, childFile)
		waitDead(t, member)
	}
	defer func() { procFileOpened = nil }()
	if e.sessionEnded(sid, before) {
		t.Fatalf("the session's child %d, forked during the look, went unseen", child)
	}
	if !fired {
		t.Fatal("the look never read the member's stat: the provocation did not happen")
	}
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDead(t, child)
	if !e.sessionEnded(sid, before) {
		t.Fatal("the session has no live process left, and did not end")
	}
}

// pidIn waits for a pid written to path, and returns it.
func pidIn(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", path)
		}
	}
}
