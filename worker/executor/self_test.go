package executor

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// goneHiddenEnv marks the run of the test binary, in a mount namespace
// of its own with a /proc mounted hidepid=2, in which
// TestGoneIsNotAProcessHiddenFromItsReader judges as another user;
// goneOwnersEnv passes it the live and the exited owner it judges.
const (
	goneHiddenEnv = "ORDERLY_EXECUTOR_TEST_GONE_HIDDEN"
	goneOwnersEnv = "ORDERLY_EXECUTOR_TEST_GONE_OWNERS"
)

// TestGoneIsNotAProcessHiddenFromItsReader: on a /proc mounted
// hidepid=2 (systemd's ProtectProc=invisible does the same), another
// user's live process has no /proc entry for the reader, as an exited
// one has none. A worker judging the host's owner, which another user
// ran (serve as one user, a worker as another), took it for exited:
// Gone said true, and the worker took an absent lease key its live
// owner held. Gone is false for it now, and still true for an owner
// that has exited. The judging runs as nobody, in a mount namespace of
// its own where /proc is mounted so: this machine's /proc is untouched.
func TestGoneIsNotAProcessHiddenFromItsReader(t *testing.T) {
	if os.Getenv(goneHiddenEnv) == "1" {
		var live, exited Process
		if _, err := fmt.Sscan(os.Getenv(goneOwnersEnv), &live.PID, &live.StartTime, &live.BootID, &live.PidNS,
			&exited.PID, &exited.StartTime, &exited.BootID, &exited.PidNS); err != nil {
			t.Fatalf("the owners: %v", err)
		}
		if err := syscall.Setgroups(nil); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setgid(65534); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setuid(65534); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(live.PID)); !os.IsNotExist(err) {
			t.Fatalf("the live owner's /proc entry as nobody: %v, want it hidden (the mount's hidepid=2)", err)
		}
		if Gone(live) {
			t.Fatalf("a live owner that /proc hides from its reader (%+v) was judged gone", live)
		}
		if !Gone(exited) {
			t.Fatalf("an owner that exited (%+v) was not judged gone", exited)
		}
		return
	}
	testenv.NeedRootTools(t, "a /proc mounted hidepid=2 in a mount namespace", "run the test as root", "unshare", "mount")
	live, err := Self()
	if err != nil || live.PidNS == 0 {
		t.Fatalf("this process: %+v, %v", live, err)
	}
	// An owner that has exited: a child started and reaped, as recorded
	// while it ran.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	exited := Process{PID: cmd.Process.Pid, StartTime: st.startTime, BootID: live.BootID, PidNS: live.PidNS}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	t.Setenv(goneOwnersEnv, fmt.Sprint(live.PID, " ", live.StartTime, " ", live.BootID, " ", live.PidNS, " ",
		exited.PID, " ", exited.StartTime, " ", exited.BootID, " ", exited.PidNS))
	testenv.RerunInMountNamespace(t, `mount -t proc -o hidepid=2 proc /proc && exec "$@"`, nil, t.Name(), goneHiddenEnv)
}
