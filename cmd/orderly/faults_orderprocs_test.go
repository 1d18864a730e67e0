package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// faultOrderEnv is the environment variable a fault test's order carries
// (an order's env override), naming it. Every process of the order
// inherits it whatever it becomes: a shell's foreground sleep, a child
// that exec'd another program, one that left the order's session and
// was re-parented to init. An argv names only the processes the test
// wrote it into (the order's shell, a child given a tag), so an orphan
// scan by argv alone could not see the rest; the scans look for both.
const faultOrderEnv = "ORDERLY_FAULT_ORDER"

// procsWithEnv lists live processes (zombies excluded) whose environment
// holds name=value; a value ending in * matches a prefix.
func procsWithEnv(name, value string) []int {
	return liveProcs(func(pid int) bool {
		v, ok := procEnv(pid, name)
		return ok && globMatch(v, value)
	})
}

// procEnv is the value of name in pid's environment (as it was at its
// exec), and whether it holds name at all.
func procEnv(pid int, name string) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return "", false
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(name+"=")); ok {
			return string(v), true
		}
	}
	return "", false
}

// orderProcs lists the live processes of the order tagged tag: those
// whose argv holds tag, and those whose environment names it
// (faultOrderEnv=tag), once each.
func orderProcs(tag string) []int {
	pids := append(procsWithArgs(tag), procsWithEnv(faultOrderEnv, tag)...)
	seen := map[int]bool{}
	out := pids[:0]
	for _, p := range pids {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// TestOrderProcsSeesAnEscapedProcess: a process of an order that left
// its session, was re-parented and exec'd a program whose argv holds
// nothing of the order (setsid, a double fork, sleep) is found by the
// order's environment, which the argv scan the fault checks used alone
// cannot see; a process of another order is not.
func TestOrderProcsSeesAnEscapedProcess(t *testing.T) {
	tag := runTag("escape", t)
	other := runTag("other", t)
	pidFile := filepath.Join(t.TempDir(), "escapee")
	// sh (argv with the tag) starts, in a new session, a shell that
	// forks a sleep and exits at once: the sleep is re-parented, and
	// its argv is "sleep 3600".
	cmd := exec.Command("sh", "-c", `setsid sh -c 'sleep 3600 </dev/null >/dev/null 2>&1 & echo $! > "$1"' _ "$2"`, "_", tag, pidFile)
	cmd.Env = []string{"PATH=/usr/bin:/bin", faultOrderEnv + "=" + tag}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start the escapee: %v %s", err, out)
	}
	var pid int
	waitUntil(t, 10*time.Second, "the escapee's pid", func() bool {
		b, err := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	// A process of another order, running beside it.
	dec := exec.Command("sleep", "3600")
	dec.Env = []string{faultOrderEnv + "=" + other}
	if err := dec.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dec.Process.Kill(); _ = dec.Wait() })

	if sid, own := procSession(pid), procSession(os.Getpid()); sid == 0 || sid == own {
		t.Fatalf("the escapee %d is in session %d, the test's is %d: want one of its own", pid, sid, own)
	}
	if ppid := parentPid(pid); ppid == cmd.Process.Pid || ppid == os.Getpid() {
		t.Fatalf("the escapee %d has parent %d: want it re-parented", pid, ppid)
	}
	if got := procArgs(pid); strings.Join(got, " ") != "sleep 3600" {
		t.Fatalf("the escapee's argv %q, want sleep 3600", got)
	}
	if byArgs := procsWithArgs(tag); len(byArgs) != 0 {
		t.Errorf("argv scan for %s found %v, want nothing: the only process left carries the tag in its environment alone", tag, byArgs)
	}
	if got := orderProcs(tag); len(got) != 1 || got[0] != pid {
		t.Errorf("orderProcs(%s) = %v, want the escapee %d alone", tag, got, pid)
	}
	if got := procsWithEnv(faultOrderEnv, strings.TrimSuffix(tag, tag[len(tag)-8:])+"*"); len(got) != 1 || got[0] != pid {
		t.Errorf("a prefix of the tag found %v, want the escapee %d alone", got, pid)
	}
}

// procSession is the session id of pid from /proc/<pid>/stat, 0 when pid
// is gone.
func procSession(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(f) < 4 {
		return 0
	}
	sid, _ := strconv.Atoi(string(f[3]))
	return sid
}
