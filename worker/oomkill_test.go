package worker_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestOrderKilledByTheOOMKillerSaysSo: an order that the kernel's OOM
// killer ends (its memory cgroup at its limit) is recorded failed with
// the SIGKILL and, in result.error, that the OOM killer most likely did
// it, not a bare SIGKILL that reads as someone's kill -9; the host's
// next order runs. The order moves itself into a memory cgroup of 32 MiB
// the test makes (cgroup v1 here, where cgroup2 has no memory
// controller) and grows a shell variable past it; nothing else is in it.
func TestOrderKilledByTheOOMKillerSaysSo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a memory cgroup needs root")
	}
	mp := v1Hierarchy(t, "memory")
	cg := filepath.Join(mp, "orderly-test-oom-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for unix.Rmdir(cg) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(cg, "memory.limit_in_bytes"), []byte(strconv.Itoa(32<<20)), 0); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	runWorker(t, worker.Options{Host: "oom", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, testenv.Logger(t))
	e.waitStatus(e.submit("oom", "true"), order.StatusSucceeded)

	id := e.submit("oom", "sh", "-c", `echo $$ > "$1/cgroup.procs" && x=$(head -c 200000000 /dev/zero | tr '\0' a) && echo survived`, "_", cg)
	o := waitTerminal(t, e, id)
	if o.Status != order.StatusFailed || o.Result == nil || o.Result.Signal != "SIGKILL" || o.Result.ExitCode != nil ||
		!strings.Contains(o.Result.Error, "most likely by the kernel's OOM killer: it killed ") {
		t.Fatalf("the order the OOM killer ended: %s, result %+v; want failed, SIGKILL and the OOM killer named", o.Status, o.Result)
	}
	e.waitStatus(e.submit("oom", "true"), order.StatusSucceeded)
}

// v1Hierarchy is the mount point of the cgroup v1 hierarchy of
// controller; the test is skipped where there is none (a pure cgroup v2
// machine: there the order's cgroup would be given the limit).
func v1Hierarchy(t *testing.T, controller string) string {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(mounts)) {
		pre, post, _ := strings.Cut(line, " - ")
		f, p := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(p) >= 3 && p[0] == "cgroup" && strings.Contains(","+p[2]+",", ","+controller+",") {
			return f[4]
		}
	}
	t.Skip("no cgroup v1 " + controller + " hierarchy on this machine")
	return ""
}
