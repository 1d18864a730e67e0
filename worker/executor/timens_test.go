package executor

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
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
	var owner Process
	owner.PID, owner.StartTime = testenv.InTimeNamespace(t, timeNSBoottime)
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

// reapTimeNSEnv marks the run of the test binary in a time namespace of
// its own in which TestReapFromAnotherTimeNamespaceLeavesNoOrderRunning
// reaps the records reapTimeNSRecordsEnv passes it.
const (
	reapTimeNSEnv        = "ORDERLY_EXECUTOR_TEST_REAP_TIMENS"
	reapTimeNSRecordsEnv = "ORDERLY_EXECUTOR_TEST_REAP_TIMENS_RECORDS"
)

// TestReapFromAnotherTimeNamespaceLeavesNoOrderRunning: a worker reaps
// what its predecessor's order left, from another time namespace than
// the predecessor's (a worker run again under unshare --time, or in a
// container restored by CRIU). The start times it reads are offset by
// its namespace's boottime, the record's by the predecessor's: it took
// the order's live leader for a later process with its pid, verified
// the group gone, and left the order running beside the next one. The
// same with the leader exited and a process of its session left, which
// read as started before the leader: a group of other processes. Each record is either ended or not
// proven gone (the host waits), never verified gone while it runs.
func TestReapFromAnotherTimeNamespaceLeavesNoOrderRunning(t *testing.T) {
	if os.Getenv(reapTimeNSEnv) == "1" {
		for _, rec := range strings.Split(os.Getenv(reapTimeNSRecordsEnv), ";") {
			var p Process
			var watch int // the process that must not run on
			if _, err := fmt.Sscan(rec, &p.PID, &p.StartTime, &p.BootID, &p.PidNS, &watch); err != nil {
				t.Fatalf("the record %q: %v", rec, err)
			}
			p.PGID = p.PID
			res := Reap(t.Context(), p, nil)
			st, err := readStat(watch)
			t.Logf("reap of %+v: %+v; process %d: %+v, %v", p, res, watch, st, err)
			if res.Err == nil && err == nil && st.alive() {
				t.Errorf("the reap of %+v verified the order's processes gone (%s) while its process %d runs", p, res.Detail, watch)
			}
		}
		return
	}
	testenv.NeedRootTools(t, "a time namespace of its own", "run the test as root", "unshare")
	m, err := readMachine()
	if err != nil {
		t.Fatal(err)
	}
	// An order's leader, alive.
	leader := exec.Command("sleep", "600")
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leader.Process.Kill(); _ = leader.Wait() })
	st, err := readStat(leader.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	records := []string{fmt.Sprint(leader.Process.Pid, " ", st.startTime, " ", m.bootID, " ", m.pidNS, " ", leader.Process.Pid)}
	// An order started in a time namespace of its own (its worker's),
	// whose leader exited, a process of its session left, reaped here.
	sh := exec.Command("unshare", "--time", "--boottime", timeNSBoottime, "--kill-child", "setsid", "sh", "-c",
		`echo $$ $(cut -d' ' -f22 /proc/$$/stat); sleep 600 </dev/null >/dev/null 2>&1 & echo $!; read x`)
	in, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	var p Process
	var member int
	if _, err := fmt.Fscan(r, &p.PID, &p.StartTime, &member); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(member, syscall.SIGKILL) })
	_ = in.Close()
	_ = sh.Wait()
	p.PGID, p.BootID, p.PidNS = p.PID, m.bootID, m.pidNS
	testenv.WaitUntil(t, 10*time.Second, "the order's leader exits", func() bool {
		_, err := readStat(p.PID)
		return errors.Is(err, fs.ErrNotExist)
	})
	res := Reap(t.Context(), p, nil)
	ms, err := readStat(member)
	t.Logf("reap of %+v: %+v; process %d: %+v, %v", p, res, member, ms, err)
	if res.Err == nil && err == nil && ms.alive() {
		t.Errorf("the reap of %+v verified the order's processes gone (%s) while its process %d runs", p, res.Detail, member)
	}
	t.Setenv(reapTimeNSRecordsEnv, strings.Join(records, ";"))
	testenv.RerunInMountNamespace(t, `exec unshare --time --boottime `+timeNSBoottime+` --kill-child "$@"`, nil, t.Name(), reapTimeNSEnv)
}
