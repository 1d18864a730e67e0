package executor

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReapOfALeaderReapedMidRead: Reap's SIGKILL ends the order's leader,
// and its parent (init for a dead worker's order, here the test) reaps it
// between Reap's open of the leader's /proc stat file and the read, which
// then fails with ESRCH. Reap took that for a failure to prove the group
// gone: it logged no kill, and its next try found nothing left, so the
// order's record and the successor's log said nothing had been killed
// (TestReapLogNamesTheOrder failed so once under load). The leader is now
// gone, as one whose file is not there to open.
//
// The reap is provoked where it matters, not hoped for: readProcFile's
// hook reaps the leader at the third open of its stat file, the leader's
// read on the turn after the SIGKILL (the first two are the first turn's
// leader read and its listing of the group).
func TestReapOfALeaderReapedMidRead(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	st, err := readStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	opens := 0
	procFileOpened = func(p string) {
		if p != path {
			return
		}
		if opens++; opens != 3 {
			return
		}
		// Killed on the first turn: reaped once it is a zombie.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
			b, err := os.ReadFile(p)
			if st, ok := parseStat(b); err == nil && ok && !st.alive() {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the leader is not dead at the third read of its stat (%v): the reap's turns changed", err)
				return
			}
		}
		if _, err := cmd.Process.Wait(); err != nil {
			t.Errorf("reap the leader: %v", err)
			return
		}
		reaped = true
	}
	defer func() { procFileOpened = nil }()

	var logs bytes.Buffer
	res := Reap(t.Context(), Process{PID: pid, PGID: pid, StartTime: st.startTime, BootID: boot},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if !reaped {
		t.Fatalf("the leader was not reaped between an open and a read (%d opens): nothing was tested", opens)
	}
	if res.Err != nil || !res.Found || !slices.Contains(res.Killed, pid) || res.Verified != VerifiedGroup {
		t.Fatalf("Reap = %+v, want the leader found, killed and proven gone", res)
	}
	if !strings.Contains(logs.String(), "killed a previous order's leftover processes") {
		t.Errorf("no line says the leader was killed:\n%s", logs.String())
	}
}
