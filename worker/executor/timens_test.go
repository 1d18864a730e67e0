package executor

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// goneTimeNSEnv marks the run of the test binary in a time namespace of
// its own, in which TestGoneIsNotALiveOwnerInAnotherTimeNamespace judges
// the owners goneTimeNSOwnersEnv passes it.
const (
	goneTimeNSEnv       = "ORDERLY_EXECUTOR_TEST_GONE_TIMENS"
	goneTimeNSOwnersEnv = "ORDERLY_EXECUTOR_TEST_GONE_TIMENS_OWNERS"
)

// timeNSBoottime is the boottime offset, in seconds, of the test's time
// namespaces: /proc shows a process's start time, in clock ticks since
// boot, plus its reader's offset.
const timeNSBoottime = "100000"

// TestGoneIsNotALiveOwnerInAnotherTimeNamespace: /proc/<pid>/stat gives
// a start time offset by the reader's time namespace's boottime. An
// owner in the same pid namespace and boot as its reader, but in another
// time namespace (unshare --time --boottime), recorded a start its
// reader read differently: Gone said a live owner had exited, and a
// worker took the lease it held at once (TestWorkerLeavesTheLeaseOfALiveHolderInAnotherTimeNamespace).
// Judged both ways: an owner in a time namespace of its own read from
// here, and this process read from a time namespace of its own. An owner
// that exited is still gone.
func TestGoneIsNotALiveOwnerInAnotherTimeNamespace(t *testing.T) {
	if os.Getenv(goneTimeNSEnv) == "1" {
		var live, exited Process
		if _, err := fmt.Sscan(os.Getenv(goneTimeNSOwnersEnv), &live.PID, &live.StartTime, &live.BootID, &live.PidNS,
			&exited.PID, &exited.StartTime, &exited.BootID, &exited.PidNS); err != nil {
			t.Fatalf("the owners: %v", err)
		}
		if st, err := readStat(live.PID); err != nil || st.startTime == live.StartTime {
			t.Fatalf("the live owner's start read in this time namespace: %+v, %v; want another than the %d it recorded", st, err, live.StartTime)
		}
		if Gone(live) {
			t.Fatalf("a live owner in another time namespace (%+v) was judged gone", live)
		}
		if !Gone(exited) {
			t.Fatalf("an owner that exited (%+v) was not judged gone", exited)
		}
		return
	}
	testenv.NeedRootTools(t, "processes in time namespaces of their own", "run the test as root", "unshare")
	self, err := Self()
	if err != nil || self.PidNS == 0 {
		t.Fatalf("this process: %+v, %v", self, err)
	}

	// An owner in a time namespace of its own, which reads its own start.
	cmd := exec.Command("unshare", "--time", "--boottime", timeNSBoottime, "--kill-child", "sh", "-c",
		`echo $$ $(cut -d' ' -f22 /proc/$$/stat); exec sleep 600`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	line := make(chan string, 1)
	go func() { s, _ := bufio.NewReader(out).ReadString('\n'); line <- s }()
	var owner Process
	select {
	case s := <-line:
		if _, err := fmt.Sscan(s, &owner.PID, &owner.StartTime); err != nil {
			t.Fatalf("the owner's line %q: %v", s, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the owner in its time namespace did not say its pid and start")
	}
	owner.BootID, owner.PidNS = self.BootID, self.PidNS
	if st, err := readStat(owner.PID); err != nil || st.startTime == owner.StartTime {
		t.Fatalf("the owner's start read here: %+v, %v; want another than the %d it read", st, err, owner.StartTime)
	}
	if Gone(owner) {
		t.Fatalf("a live owner in a time namespace of its own (%+v) was judged gone", owner)
	}

	// This process, judged from a time namespace of its own, beside an
	// owner that exited (a child started and reaped).
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(sleeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	exited := Process{PID: sleeper.Process.Pid, StartTime: st.startTime, BootID: self.BootID, PidNS: self.PidNS}
	_ = sleeper.Process.Kill()
	_ = sleeper.Wait()
	t.Setenv(goneTimeNSOwnersEnv, strings.Join([]string{strconv.Itoa(self.PID), strconv.FormatUint(self.StartTime, 10), self.BootID,
		strconv.FormatUint(self.PidNS, 10), strconv.Itoa(exited.PID), strconv.FormatUint(exited.StartTime, 10), exited.BootID,
		strconv.FormatUint(exited.PidNS, 10)}, " "))
	testenv.RerunInMountNamespace(t, `exec unshare --time --boottime `+timeNSBoottime+` --kill-child "$@"`, nil, t.Name(), goneTimeNSEnv)
}
