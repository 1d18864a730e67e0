package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWorkerSharingItsPidsLimitWithAForkBomb: an order forks until the
// pids limit the worker shares with it (systemd's TasksMax= of the unit;
// here a cgroup v1 pids cgroup of the test's, pids.max at the worker's
// own tasks plus 24) is reached and keeps it there until its timeout.
// The worker keeps running, ends the order timed_out with its processes
// gone, and runs the host's next order.
func TestWorkerSharingItsPidsLimitWithAForkBomb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a pids cgroup needs root")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mp string
	for line := range strings.Lines(string(mounts)) {
		pre, post, _ := strings.Cut(line, " - ")
		if f, p := strings.Fields(pre), strings.Fields(post); len(f) >= 5 && len(p) >= 3 && p[0] == "cgroup" &&
			strings.Contains(","+p[2]+",", ",pids,") {
			mp = f[4]
		}
	}
	if mp == "" {
		t.Skip("no cgroup v1 pids hierarchy on this machine")
	}
	s := newStack(t)
	cmd := startVictimWorker(t, s, "bombed")
	warm := s.submit(map[string]any{"host": "bombed", "command": "true"}, "", http.StatusAccepted)
	if o := s.waitFor(warm.ID, 60*time.Second, terminal); o.Status != "succeeded" {
		t.Fatalf("warm-up order: %s", o.Status)
	}
	cg := filepath.Join(mp, "orderly-test-bomb-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The worker is still running (its own cleanup comes after):
		// back to the hierarchy's root with it.
		_ = os.WriteFile(filepath.Join(mp, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0)
		deadline := time.Now().Add(10 * time.Second)
		for unix.Rmdir(cg) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(filepath.Join(cg, "pids.current"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(cur)))
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte(strconv.Itoa(n+24)), 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("the worker has %d tasks; pids.max %d", n, n+24)

	// perl, not sh: a shell gives up at its first failed fork.
	bomb := s.submit(map[string]any{"host": "bombed", "command": "perl", "timeout_seconds": 5,
		"args": []string{"-e", `for (1..100000) { my $p = fork; if (!defined $p) { select(undef, undef, undef, 0.01); next } if ($p == 0) { sleep 60; exit } }`}},
		"", http.StatusAccepted)
	next := s.submit(map[string]any{"host": "bombed", "command": "echo", "args": []string{"next"}}, "", http.StatusAccepted)
	o := s.waitFor(bomb.ID, 60*time.Second, terminal)
	events, _ := os.ReadFile(filepath.Join(cg, "pids.events"))
	t.Logf("the fork bomb: %s; pids.events %s", o.Status, strings.TrimSpace(string(events)))
	if o.Status != "timed_out" {
		t.Errorf("the fork bomb ended %s, want timed_out", o.Status)
	}
	if nx := s.waitFor(next.ID, 60*time.Second, terminal); nx.Status != "succeeded" || nx.Result.Stdout.Content != "next\n" {
		t.Errorf("the next order: %s %+v", nx.Status, nx.Result)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the worker is gone: %v", err)
	}
}
