package hostpolicy

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// TestCgroupPassedThrough: with worker.cgroup set, an order runs in its own
// cgroup named after it, under the configured parent.
func TestCgroupPassedThrough(t *testing.T) {
	t.Parallel()
	parent := cgroupParent(t)
	p := systemPolicy(t, func(w *config.Worker) { w.Cgroup = parent })
	if got, _ := p.Cgroup(); got != parent {
		t.Fatalf("Cgroup() = %q, want %q", got, parent)
	}
	o := &order.Order{ID: order.NewID(), Command: "cat", Args: []string{"/proc/self/cgroup"}}
	res, prep := run(t, p, o)
	name := "order-" + o.ID.String()
	if prep.Req.CgroupParent != parent || prep.Req.CgroupName != name {
		t.Errorf("Req cgroup = %q %q, want %q %q", prep.Req.CgroupParent, prep.Req.CgroupName, parent, name)
	}
	if got := p.OrderCgroup(o.ID); got != filepath.Join(parent, name) || got != res.Process.Cgroup {
		t.Errorf("OrderCgroup = %q, want %q, the cgroup the order ran in", got, res.Process.Cgroup)
	}
	if want := "0::/" + filepath.Base(parent) + "/" + name + "\n"; !strings.Contains(string(res.Stdout.Content), want) {
		t.Errorf("the order saw /proc/self/cgroup %q, want a line %q", res.Stdout.Content, want)
	}
	if res.Verified != "cgroup" {
		t.Errorf("Verified = %q, want cgroup", res.Verified)
	}
}

func TestCgroupSetting(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"relative", t.TempDir(), "/nonexistent/cgroup"} {
		cfg := config.Default().Worker
		cfg.Cgroup = bad
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "worker.cgroup") {
			t.Errorf("worker.cgroup %q: New error %v, want a worker.cgroup error", bad, err)
		}
	}
	p := systemPolicy(t, func(w *config.Worker) { w.Cgroup = "" })
	prep, err := p.Prepare(&order.Order{ID: order.NewID(), Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if prep.Req.CgroupParent != "" || prep.Req.CgroupName != "" || p.OrderCgroup(order.NewID()) != "" {
		t.Errorf("cgroup off, yet Req has %q %q", prep.Req.CgroupParent, prep.Req.CgroupName)
	}
}

// cgroupParent makes a cgroup v2 directory at the root of the unified
// hierarchy for the test. Without root or a cgroup2 mount it skips, except
// under CI=true, where that fails.
func cgroupParent(t *testing.T) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root to create a cgroup")
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		skip("%v", err)
	}
	var mount string
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			mount = f[4]
			break
		}
	}
	if mount == "" {
		skip("no cgroup2 mount")
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	dir := filepath.Join(mount, "orderly-hostpolicy-"+hex.EncodeToString(suffix))
	if err := os.Mkdir(dir, 0o755); err != nil {
		skip("create a test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}
