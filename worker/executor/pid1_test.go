package executor

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pid1Env marks the run of the test binary that is PID 1 of a pid
// namespace of its own.
const pid1Env = "ORDERLY_EXECUTOR_TEST_PID1"

// TestRunAsPID1ReapsTheOrdersProcesses: a worker that is PID 1 of its pid
// namespace (the container images' entrypoint) inherits every orphan, the
// killed processes of each order's group and session included, and must
// reap them: nothing else will, and each zombie holds a pid of the
// container's for good.
func TestRunAsPID1ReapsTheOrdersProcesses(t *testing.T) {
	if os.Getenv(pid1Env) == "1" {
		testRunAsPID1(t)
		return
	}
	if _, err := exec.LookPath("unshare"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and unshare (util-linux) under CI=true")
		}
		t.Skip("needs root and unshare (util-linux)")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private",
		os.Args[0], "-test.run", "^TestRunAsPID1ReapsTheOrdersProcesses$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), pid1Env+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("as PID 1 of a pid namespace:\n%s", out.String())
	if err != nil || !strings.Contains(out.String(), "--- PASS: TestRunAsPID1ReapsTheOrdersProcesses") {
		t.Fatalf("the run as PID 1 failed: %v", err)
	}
}

func testRunAsPID1(t *testing.T) {
	if os.Getpid() != 1 {
		t.Fatalf("pid %d, not 1", os.Getpid())
	}
	e := newTestExecutor(t)
	for _, script := range []string{
		"sleep 100 & sleep 100 & echo $!; sleep 0.05",       // the group
		"set -m; sleep 100 & echo $!; sleep 0.05",           // another group of the session
		"sleep 100 & echo $!; trap '' TERM; exec sleep 100", // ended by the timeout
	} {
		req := baseRequest("/bin/bash", "-c", script)
		req.Timeout, req.KillGrace = time.Second, 100*time.Millisecond
		res := e.Run(t.Context(), req, nil)
		if !res.GroupGone {
			t.Errorf("%q: GroupGone = false", script)
		}
	}
	if zombies := zombieChildren(t); len(zombies) > 0 {
		t.Errorf("the orders left zombie children of PID 1: %v", zombies)
	}
}

// zombieChildren lists this process's children that are zombies.
func zombieChildren(t *testing.T) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var zombies []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			zombies = append(zombies, pid)
		}
	}
	return zombies
}
