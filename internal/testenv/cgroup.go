package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// OutOfTheRootCgroup puts the test process in a cgroup of its own when it
// runs in the root of the cgroup2 hierarchy, and back there at the test's
// end. worker.cgroup auto never takes the root (its other children are
// not the worker's), and a machine whose init is not systemd may leave
// every process in it: the fresh VMs this repository's tests run on do
// (their init, process_api, and all below it in 0::/; earlier rounds'
// machines had them in an /init.scope). There a worker is given its
// cgroup by what starts it, a container runtime or a service manager; a
// test of auto's cgroups plays that part with this. Call it once the
// test's PostgreSQL and NATS run: the processes the test starts
// afterwards (a worker of its own, an order's) begin in this cgroup, and
// the cleanup kills what is left of them.
func OutOfTheRootCgroup(t testing.TB) {
	t.Helper()
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(self), "\n"), "0::/") {
		return
	}
	root := cgroup2Root()
	if root == "" {
		t.Fatal("the test runs in the cgroup2 root, and no mount of that root is found")
	}
	own := filepath.Join(root, "orderly-test-self-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatalf("a cgroup for the test: %v", err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(own, "cgroup.procs"), pid, 0); err != nil {
		_ = os.Remove(own)
		t.Fatalf("move the test into its own cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), pid, 0); err != nil {
			// Killing what is in own now would kill the test: leave it.
			t.Errorf("move the test back to the root cgroup: %v", err)
			return
		}
		_ = os.WriteFile(filepath.Join(own, "cgroup.kill"), []byte("1"), 0)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			err := os.Remove(own)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove the test's cgroup: %v", err)
				return
			}
		}
	})
}

// cgroup2Root is the mount point of the cgroup2 hierarchy's root
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid layout), or "".
func cgroup2Root() string {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			return f[4]
		}
	}
	return ""
}
