package executor

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/testenv"
)

// stopAdoptingEnv marks the run of the test binary in which
// TestStopAdoptingClearsOnlyTheFlagItSet sets and clears the process's
// child subreaper flag: the package's other tests never run under it.
const stopAdoptingEnv = "ORDERLY_EXECUTOR_TEST_STOP_ADOPTING"

// TestStopAdoptingClearsOnlyTheFlagItSet: an adopting Executor left its
// process a child subreaper after its worker stopped, so every later
// orphan of whatever the process started (serve's test binary: a
// postmaster pg_ctl daemonized) was handed to it and stayed a zombie.
// StopAdopting clears the flag AdoptOrphans set, reaps an orphan that
// died since its order's end, and a later orphan goes elsewhere; a flag
// set before AdoptOrphans (by someone else) stays. In a run of the test
// binary of its own.
func TestStopAdoptingClearsOnlyTheFlagItSet(t *testing.T) {
	runInOwnProcess(t, stopAdoptingEnv, testStopAdopting)
}

func testStopAdopting(t *testing.T) {
	if testenv.Subreaper(t) {
		t.Fatal("the test binary starts as a child subreaper")
	}
	e := newTestExecutor(t)
	if err := e.AdoptOrphans(); err != nil {
		t.Fatal(err)
	}
	if !testenv.Subreaper(t) {
		t.Fatal("AdoptOrphans did not make the process a child subreaper")
	}
	res := e.Run(t.Context(), baseRequest("/bin/true"), nil)
	if res.ExitCode == nil || *res.ExitCode != 0 || res.Verified != VerifiedSubreaper {
		t.Fatalf("an order of the adopting Executor: %+v", res)
	}
	// An orphan handed to the process after its order's end, dead by
	// the worker's stop: a zombie of the process's until it is reaped.
	dead := testenv.Orphan(t, "0.1")
	if ppid := parentOf(t, dead); ppid != os.Getpid() {
		t.Fatalf("the orphan %d went to %d, not to the subreaper %d", dead, ppid, os.Getpid())
	}
	waitState(t, dead, func(st procStat, err error) bool { return err == nil && st.state == 'Z' }, "a zombie")
	if err := e.StopAdopting(); err != nil {
		t.Fatal(err)
	}
	if testenv.Subreaper(t) {
		t.Error("the process is still a child subreaper after StopAdopting")
	}
	if _, err := readStat(dead); err == nil {
		t.Errorf("the dead orphan %d was not reaped at StopAdopting", dead)
	}
	later := testenv.Orphan(t, "30")
	defer killAll([]int{later})
	if ppid := parentOf(t, later); ppid == os.Getpid() {
		t.Errorf("an orphan after StopAdopting was handed to the process %d", ppid)
	}

	// A flag set before AdoptOrphans is not the Executor's to clear.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	e = newTestExecutor(t)
	if err := e.AdoptOrphans(); err != nil {
		t.Fatal(err)
	}
	if err := e.StopAdopting(); err != nil {
		t.Fatal(err)
	}
	if !testenv.Subreaper(t) {
		t.Error("StopAdopting cleared a child subreaper flag it had not set")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
}

// parentOf is pid's parent, once the kernel re-parented it.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	st, err := readStat(pid)
	if err != nil {
		t.Fatalf("the orphan %d: %v", pid, err)
	}
	return st.ppid
}

// waitState waits up to 10 s for pid's stat to satisfy ok.
func waitState(t *testing.T, pid int, ok func(procStat, error) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := readStat(pid)
		if ok(st, err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d is not %s within 10 s: %+v %v", pid, what, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
