package executor

import (
	"os/exec"
	"sync"
	"testing"
	"time"
)

// TestSessionChecksOpenTheHostFilesOnce: the look at an order's session
// reads host-wide /proc files (the last pid, pid_max, /proc/stat,
// /proc/loadavg) for every order whose session forked, and several
// times an order when other processes of the machine fork meanwhile
// (eight workers on one machine: 16 reads an order). An Executor opens
// each once and reads it again in place: 20 orders that fork open each
// at most once. Before, each read opened its file: /proc/loadavg 20
// times or more.
func TestSessionChecksOpenTheHostFilesOnce(t *testing.T) {
	hostWide := map[string]bool{"/proc/sys/kernel/ns_last_pid": true, "/proc/sys/kernel/pid_max": true,
		"/proc/stat": true, "/proc/loadavg": true}
	var mu sync.Mutex
	opened := map[string]int{}
	procFileOpened = func(p string) {
		if hostWide[p] {
			mu.Lock()
			opened[p]++
			mu.Unlock()
		}
	}
	defer func() { procFileOpened = nil }()

	e := New(nil)
	// As the worker asks for an order without a cgroup (handle.go).
	req := baseRequest("/bin/sh", "-c", "/bin/true & wait")
	req.ExitWait, req.AloneWait = 10*time.Millisecond, 100*time.Millisecond
	req.OnStart = func(Process, bool) error { return nil }
	const n = 20
	for range n {
		res := e.Run(t.Context(), req, nil)
		if res.ExitCode == nil || *res.ExitCode != 0 || !res.GroupGone {
			t.Fatalf("result %+v", res)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(opened) == 0 {
		t.Fatal("no host-wide /proc file was opened: the session checks under test did not run")
	}
	for p, c := range opened {
		if c > 1 {
			t.Errorf("%s opened %d times in %d orders, want once", p, c, n)
		}
	}
}

// TestHostFilesReadAfresh: a held file read again from its start says
// what the kernel says now, not what it said at the first read.
func TestHostFilesReadAfresh(t *testing.T) {
	h := newHostFiles()
	forks, err := h.forkCount()
	if err != nil {
		t.Fatal(err)
	}
	last, err := h.lastPidNow()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if now, err := h.forkCount(); err != nil || now <= forks {
		t.Errorf("fork count %d, %v after a fork; %d before", now, err, forks)
	}
	if now, err := h.lastPidNow(); err != nil || now == last {
		t.Errorf("last pid %d, %v after pid %d was handed out; %d before", now, err, cmd.Process.Pid, last)
	}
	if _, err := h.taskCount(); err != nil {
		t.Error(err)
	}
	if _, err := h.pidMaxNow(); err != nil {
		t.Error(err)
	}
}
