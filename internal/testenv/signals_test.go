package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// ignoredSignals reads the SigIgn mask of /proc/self/status as a process
// started by this one sees it, and says whether SIGINT and SIGHUP are in it.
func ignoredSignals(t *testing.T, cmd *exec.Cmd) (sigint, sighup bool) {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	hex, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "SigIgn:")
	mask, perr := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
	if !ok || perr != nil {
		t.Fatalf("%v: %q", cmd.Args, out)
	}
	return mask&(1<<(syscall.SIGINT-1)) != 0, mask&(1<<(syscall.SIGHUP-1)) != 0
}

// TestChildrenOfABinaryStartedIgnoringSIGINTGetTheDefault: a test binary
// started with SIGINT and SIGHUP ignored (a background job of a script,
// nohup) passed the ignoring on to every process it started, and an
// order of a test's in-process worker ignored a cancel's SIGINT. Run
// again so started, this binary's children ignore neither.
func TestChildrenOfABinaryStartedIgnoringSIGINTGetTheDefault(t *testing.T) {
	if os.Getenv("ORDERLY_TESTENV_SIGNALS_IGNORED") == "1" {
		if sigint, sighup := ignoredSignals(t, exec.Command("grep", "SigIgn", "/proc/self/status")); sigint || sighup {
			t.Fatalf("a child ignores SIGINT %v, SIGHUP %v", sigint, sighup)
		}
		return
	}
	const ignoring = `trap '' INT HUP; exec "$@"`
	if sigint, sighup := ignoredSignals(t, exec.Command("sh", "-c", ignoring, "_", "grep", "SigIgn", "/proc/self/status")); !sigint || !sighup {
		t.Fatalf("the shell's trap did not ignore SIGINT (%v) and SIGHUP (%v): the test's premise is gone", sigint, sighup)
	}
	cmd := exec.Command("sh", "-c", ignoring, "_", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "ORDERLY_TESTENV_SIGNALS_IGNORED=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("started ignoring SIGINT and SIGHUP: %v\n%s", err, out)
	}
}
