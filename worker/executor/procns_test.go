package executor

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/testenv"
)

// goneForeignProcEnv marks the run of the test binary in a pid namespace
// of its own whose /proc is still the parent namespace's.
const goneForeignProcEnv = "ORDERLY_EXECUTOR_TEST_GONE_FOREIGN_PROC"

// TestGoneReadsNoOtherPidNamespacesProc: a worker started in a pid
// namespace of its own without a /proc mounted for it (unshare --pid
// --fork without --mount-proc; nsenter --pid without the mount
// namespace) reads the parent namespace's /proc, where /proc/<pid> is
// whatever process has that number there. A live owner of its namespace,
// recorded with its own start (as its Self reads it where /proc is its
// namespace's), was read there as another process's pid, and judged
// gone: a worker took the lease it held. Such a /proc tells nothing of
// this namespace's processes now, and nothing is judged gone by it.
// Here the owner is a child of the inner run (pid 2 of its namespace),
// read through the parent's /proc, where pid 2 is another process.
func TestGoneReadsNoOtherPidNamespacesProc(t *testing.T) {
	if os.Getenv(goneForeignProcEnv) == "1" {
		self, err := os.Readlink("/proc/self")
		if err != nil || self == strconv.Itoa(os.Getpid()) {
			t.Fatalf("/proc/self is %q (%v) for pid %d: /proc is this namespace's, the scenario did not happen", self, err, os.Getpid())
		}
		// The owner: a child of this process, which reads its pid in the
		// parent's numbering from /proc/self (a shell's read is its own),
		// and so its start as its owner record would hold it.
		cmd := exec.Command("sh", "-c", `read -r pid rest </proc/self/stat; echo "$pid"; exec sleep 600`)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(line) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		st, ok := parseStat(stat)
		if !ok {
			t.Fatalf("parse %q", stat)
		}
		var ns unix.Stat_t
		if err := unix.Stat("/proc/self/ns/pid", &ns); err != nil {
			t.Fatal(err)
		}
		boot, err := os.ReadFile(bootIDPath)
		if err != nil {
			t.Fatal(err)
		}
		owner := Process{PID: cmd.Process.Pid, StartTime: st.startTime, BootID: string(bytes.TrimSpace(boot)), PidNS: ns.Ino}
		if other, err := os.ReadFile("/proc/" + strconv.Itoa(owner.PID) + "/stat"); err != nil || bytes.Equal(other, stat) {
			t.Fatalf("/proc/%d through the parent's /proc: %q, %v; want another process's", owner.PID, other, err)
		}
		if Gone(owner) {
			t.Fatalf("a live owner (%+v) was judged gone through another pid namespace's /proc", owner)
		}
		return
	}
	testenv.NeedRootTools(t, "a pid namespace of its own", "run the test as root", "unshare")
	testenv.RerunInMountNamespace(t, `exec unshare --pid --fork --kill-child "$@"`, nil, t.Name(), goneForeignProcEnv)
}

// startForeignProcEnv marks the run of the test binary in a pid
// namespace of its own whose /proc is still the parent namespace's.
const startForeignProcEnv = "ORDERLY_EXECUTOR_TEST_START_FOREIGN_PROC"

// TestAnOrderDoesNotStartWhereProcIsAnotherPidNamespaces: where /proc is
// another pid namespace's, the started leader cannot be identified for
// OnStart (readPidNS refuses it), and the order's process was killed
// right after its start (Result.Aborted), having run meanwhile: a
// non-idempotent order ran in part, every order of the host so. Its
// identity is known to be unreadable before the start: nothing starts.
// Self says why, for the worker's one line at its start.
func TestAnOrderDoesNotStartWhereProcIsAnotherPidNamespaces(t *testing.T) {
	if os.Getenv(startForeignProcEnv) == "1" {
		if self, err := os.Readlink("/proc/self"); err != nil || self == strconv.Itoa(os.Getpid()) {
			t.Fatalf("/proc/self is %q (%v) for pid %d: /proc is this namespace's, the scenario did not happen", self, err, os.Getpid())
		}
		marker := filepath.Join(t.TempDir(), "ran")
		req := sh("echo ran > " + marker)
		req.OnStart = func(Process, bool) error { return nil }
		execed := false // its execve done (Request.Started)
		req.Started = func() { execed = true }
		res := New(nil).Run(t.Context(), req, nil)
		if execed {
			t.Errorf("the order's command was started (its execve done), though its process could not be identified; result: start %v, aborted %v", res.StartErr, res.Aborted)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("the order's command ran (%s written), though its process could not be identified; result: start %v, aborted %v", marker, res.StartErr, res.Aborted)
		}
		if res.StartErr == nil || !strings.Contains(res.StartErr.Error(), "mounted for another pid namespace") {
			t.Errorf("StartErr %v, aborted %v; want the refusal of another pid namespace's /proc", res.StartErr, res.Aborted)
		}
		// The worker says it once, at its start, from Self's error
		// (worker.New); Self said nothing.
		if me, err := Self(); err == nil || !strings.Contains(err.Error(), "mounted for another pid namespace") || me.PidNS != 0 {
			t.Errorf("Self() = %+v, %v; want PidNS 0 and the refusal of another pid namespace's /proc", me, err)
		}
		return
	}
	testenv.NeedRootTools(t, "a pid namespace of its own", "run the test as root", "unshare")
	testenv.RerunInMountNamespace(t, `exec unshare --pid --fork --kill-child "$@"`, nil, t.Name(), startForeignProcEnv)
}
