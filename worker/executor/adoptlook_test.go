package executor

import (
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// adoptLookEnv marks the run of the test binary in which
// TestAdoptedLookReadsOnlyChildren makes itself a child subreaper (the
// attribute is the whole process's).
const adoptLookEnv = "ORDERLY_EXECUTOR_TEST_ADOPT_LOOK"

// TestAdoptedLookReadsOnlyChildren: a worker that adopts its orders'
// orphans looks, at each order's end, at the pids handed out since the
// leader for children of its own (endAdopted). On a host where other
// processes fork meanwhile (eight workers on one machine) most of those
// pids are theirs; the look asks the kernel which are its children
// (isChild) and reads the stat of those only. Counted with a process of
// another session forking all along: 50 orders of `true` read no stat of
// a pid that was not one of their leaders. Before, every pid in the
// window had its stat read (55 in 50 orders here, ~12 an order with eight
// workers forking).
func TestAdoptedLookReadsOnlyChildren(t *testing.T) {
	runInOwnProcess(t, adoptLookEnv, testAdoptedLookReadsOnlyChildren)
}

func testAdoptedLookReadsOnlyChildren(t *testing.T) {
	forker := exec.Command("/bin/sh", "-c", "while :; do /bin/true; done")
	forker.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := forker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-forker.Process.Pid, syscall.SIGKILL)
		_ = forker.Wait()
	})

	var mu sync.Mutex
	stats := map[int]int{} // pid → stat reads
	procFileOpened = func(p string) {
		rest, ok := strings.CutPrefix(p, "/proc/")
		if !ok {
			return
		}
		if n, ok := strings.CutSuffix(rest, "/stat"); ok {
			if pid, err := strconv.Atoi(n); err == nil {
				mu.Lock()
				stats[pid]++
				mu.Unlock()
			}
		}
	}
	defer func() { procFileOpened = nil }()

	e := New(nil)
	if err := e.AdoptOrphans(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.StopAdopting() }()
	leaders := map[int]bool{}
	adopted := 0
	const n = 50
	for range n {
		res := e.Run(t.Context(), baseRequest("/bin/true"), nil)
		if res.ExitCode == nil || *res.ExitCode != 0 || !res.GroupGone {
			t.Fatalf("result %+v", res)
		}
		leaders[res.Process.PID] = true
		adopted += res.Adopted
	}
	if adopted != 0 {
		t.Errorf("%d processes adopted from orders of true", adopted)
	}
	mu.Lock()
	defer mu.Unlock()
	others := 0
	for pid, c := range stats {
		if !leaders[pid] {
			others += c
		}
	}
	if others > 0 {
		t.Errorf("%d stat reads in %d orders of pids that were not their leaders (%d pids)", others, n, len(stats)-len(leaders))
	}
}
