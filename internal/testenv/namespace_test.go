package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// TestUserManagerLeavesOtherCgroups starts and stops UserManagerScript's
// user manager while an empty cgroup of another test stands on every
// cgroup hierarchy systemd uses: such a cgroup (a test's cgroup parent,
// an order's cgroup before its process is in it, a worker's probe) is
// still there afterwards. A manager started in the machine's cgroup took
// the hierarchy's root for its own and removed, as it stopped, every
// empty cgroup on it: the worker tests that ran beside it lost theirs
// (`worker.cgroup: auto` chose none, a cgroup parent vanished).
func TestUserManagerLeavesOtherCgroups(t *testing.T) {
	if os.Getenv("ORDERLY_TESTENV_USER_MANAGER") == "1" {
		return // the manager ran; the script stops it
	}
	NeedRootTools(t, "a systemd user manager", "scripts/ensure-dbus.sh",
		"unshare", "dbus-daemon", "systemctl", "/lib/systemd/systemd")
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "orderly-bystander-" + hex.EncodeToString(suffix)
	var made []string
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(h, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		made = append(made, dir)
		t.Cleanup(func() { _ = os.Remove(dir) })
	}
	if len(made) == 0 {
		t.Fatal("no cgroup hierarchy is mounted under /sys/fs/cgroup")
	}
	RerunInMountNamespace(t, UserManagerScript(""), nil, "TestUserManagerLeavesOtherCgroups", "ORDERLY_TESTENV_USER_MANAGER")
	for _, dir := range made {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the user manager removed another's cgroup %s: %v", dir, err)
		}
	}
}
