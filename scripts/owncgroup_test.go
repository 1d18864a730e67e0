package scripts

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// cgroup2Mount is where the cgroup2 hierarchy's root is mounted, "" for
// none.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pre, post, ok := strings.Cut(strings.Join(fields, " "), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if p := strings.Fields(pre); len(p) >= 5 && p[3] == "/" {
			return p[4]
		}
	}
	return ""
}

// runOwnCgroup runs own-cgroup.sh with args as a machine booted without
// a service manager starts it: as root, in the root cgroup, with no
// /run/systemd/system. It does so in a private mount namespace (where
// setup, a shell script, may mount more), so that hiding /run/systemd
// touches nothing else; the shell moves itself to the root cgroup first
// (the tests run in a cgroup of their own under make test). It returns
// the combined output and the error.
func runOwnCgroup(t *testing.T, mount, setup string, args ...string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("own-cgroup.sh")
	if err != nil {
		t.Fatal(err)
	}
	sh := `set -e
if [ -d /run/systemd ]; then mount -t tmpfs none /run/systemd; fi
echo $$ > "$1/cgroup.procs"
` + setup + `
shift
exec "$0" "$@"`
	cmd := exec.Command("unshare", append([]string{"-m", "sh", "-c", sh, script, mount}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func needRootCgroup2(t *testing.T) string {
	t.Helper()
	testenv.NeedRootTools(t, "own-cgroup.sh's test", "run it as root", "unshare", "sh")
	mount := cgroup2Mount(t)
	if mount == "" {
		t.Skip("no cgroup2 hierarchy mounted: own-cgroup.sh has nothing to do")
	}
	return mount
}

// TestOwnCgroupRunsTheCommandWhereCgroupsAreReadOnly: in a container
// run as root without privileges (Docker's default: cgroupfs mounted
// read-only, the container's cgroup its namespace's root), the script's
// mkdir failed, set -e ended it, and make test ran no test at all,
// where before only the containment tests failed. The command runs, in
// the cgroup it was in, and the script says why it did not move it.
func TestOwnCgroupRunsTheCommandWhereCgroupsAreReadOnly(t *testing.T) {
	mount := needRootCgroup2(t)
	out, err := runOwnCgroup(t, mount, `mount -o remount,bind,ro "$1"`, "sh", "-c", `echo ran in "$(sed -n 's/^0:://p' /proc/self/cgroup)"`)
	if err != nil || !strings.Contains(out, "ran in /\n") {
		t.Fatalf("own-cgroup.sh with the cgroups read-only: %v\n%s\nwant the command run, in the root cgroup", err, out)
	}
	if !strings.Contains(out, "read-only") {
		t.Errorf("own-cgroup.sh with the cgroups read-only said:\n%s\nwant why it left the command in the root cgroup", out)
	}
}

// TestOwnCgroupRemovesOnlyTheCgroupsOfEndedRuns: each run removed every
// empty orderly-make-* cgroup it found, another run's too, which may have
// made its cgroup and not yet moved into it (make test in two worktrees
// at once): that run's move then failed, and set -e ended it. A run's
// own cgroup is named after its pid: the ones of live pids are left,
// the ones of ended runs removed, with the cgroups their workers left in
// them. The command runs in a cgroup of its own.
func TestOwnCgroupRemovesOnlyTheCgroupsOfEndedRuns(t *testing.T) {
	mount := needRootCgroup2(t)
	// A live pid for the run that has just made its cgroup: this test's.
	live := filepath.Join(mount, "orderly-make-"+strconv.Itoa(os.Getpid()))
	// An ended run's: a pid no process has (above pid_max).
	ended := filepath.Join(mount, "orderly-make-99999999")
	for _, d := range []string{live, filepath.Join(ended, "order-1")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(ended, "order-1"), ended, live} {
			_ = os.Remove(d)
		}
	})
	out, err := runOwnCgroup(t, mount, "", "sed", "-n", "s/^0:://p", "/proc/self/cgroup")
	if err != nil {
		t.Fatalf("own-cgroup.sh: %v\n%s", err, out)
	}
	own := strings.TrimSpace(out)
	if !strings.HasPrefix(own, "/orderly-make-") {
		t.Errorf("the command ran in the cgroup %q, want one of its own (/orderly-make-<pid>)", own)
	} else {
		_ = os.Remove(filepath.Join(mount, own)) // empty: the command ended
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the cgroup of a run still going (pid %d): %v, want it left", os.Getpid(), err)
	}
	if _, err := os.Stat(ended); !os.IsNotExist(err) {
		t.Errorf("the cgroup of an ended run, with a cgroup its workers left: %v, want it removed", err)
	}
}
