package executor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// subreaperEnv marks the run of the test binary that makes itself a child
// subreaper: the attribute is the whole process's, so the package's other
// tests (and their exec.Command children) never run under it.
const subreaperEnv = "ORDERLY_EXECUTOR_TEST_SUBREAPER"

// TestRunSubreaperEndsSetsidEscapee: without an order cgroup, a process that
// starts a session of its own (setsid) and holds none of the order's pipes
// outlives the order, found by nobody. A worker that adopts the orders'
// orphans (AdoptOrphans) is handed it when its parent exits, and ends it
// at the order's end; the record says so. Checked from /proc, in a run of
// the test binary of its own and again after that run ended.
func TestRunSubreaperEndsSetsidEscapee(t *testing.T) {
	if os.Getenv(subreaperEnv) != "" {
		testRunSubreaper(t, os.Getenv(subreaperEnv))
		return
	}
	t.Parallel()
	token := fmt.Sprintf("%d.%06d", 300, time.Now().UnixNano()%1000000)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestRunSubreaperEndsSetsidEscapee$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), subreaperEnv+"="+token)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("as a child subreaper:\n%s", out.String())
	if left := procsWith(t, "sleep", token); len(left) > 0 {
		killAll(left)
		t.Errorf("processes of the orders outlived the worker: %v", left)
	}
	if err != nil || !strings.Contains(out.String(), "--- PASS: TestRunSubreaperEndsSetsidEscapee") {
		t.Fatalf("the run as a child subreaper failed: %v", err)
	}
}

func testRunSubreaper(t *testing.T, token string) {
	// The order: a process that leaves the session, holds none of the
	// order's pipes, and says it runs before the leader exits.
	script := func(marker string) string {
		return fmt.Sprintf(`setsid sh -c 'echo $$ > %[1]s; exec sleep %[2]s' </dev/null >/dev/null 2>&1 &
while [ ! -s %[1]s ]; do sleep 0.01; done`, marker, token)
	}
	dir := t.TempDir()

	// Before: as every worker did, the escapee outlives the order.
	// The escapee is looked for by the PID it wrote, not by its sleep: the
	// marker is written before the exec, and a look in between finds no
	// sleep (CI did once).
	e := newTestExecutor(t)
	before := filepath.Join(dir, "before")
	res := e.Run(t.Context(), baseRequest("/bin/sh", "-c", script(before)), nil)
	b, err := os.ReadFile(before)
	if err != nil {
		t.Fatal(err)
	}
	escapee, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	st, err := readStat(escapee)
	alive := err == nil && st.alive()
	if escapee > 0 {
		killAll([]int{escapee})
	}
	if res.ExitCode == nil || *res.ExitCode != 0 || res.StartErr != nil {
		t.Fatalf("order without a subreaper: %+v", res)
	}
	if !alive {
		t.Fatalf("without a subreaper the escapee %d should outlive the order (%v)", escapee, err)
	}
	if res.Verified != VerifiedGroup || res.Adopted != 0 {
		t.Errorf("without a subreaper: verified %q, adopted %d; want %q, 0", res.Verified, res.Adopted, VerifiedGroup)
	}

	e = newTestExecutor(t)
	if err := e.AdoptOrphans(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		marker := filepath.Join(dir, strconv.Itoa(i))
		res := e.Run(t.Context(), baseRequest("/bin/sh", "-c", script(marker)), nil)
		if res.ExitCode == nil || *res.ExitCode != 0 || res.StartErr != nil {
			t.Fatalf("order %d: %+v", i, res)
		}
		b, err := os.ReadFile(marker)
		if err != nil {
			t.Fatal(err)
		}
		escapee, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if left := procsWith(t, "sleep", token); len(left) > 0 {
			killAll(left)
			t.Fatalf("order %d: the escapee outlived the order: %v", i, left)
		}
		if err := syscall.Kill(escapee, 0); err != syscall.ESRCH {
			t.Errorf("order %d: the escapee %d is still there (%v), zombie or alive", i, escapee, err)
		}
		if res.Adopted != 1 || res.Verified != VerifiedSubreaper || res.Escaped || !res.GroupGone {
			t.Errorf("order %d: adopted %d, verified %q, escaped %v, group gone %v; want 1, %q, false, true",
				i, res.Adopted, res.Verified, res.Escaped, res.GroupGone, VerifiedSubreaper)
		}
	}
	// An escapee that holds the order's stdout: ended with the order, so
	// its output is whole and is not waited for (pipeDrainDelay).
	began := time.Now()
	held := filepath.Join(dir, "held")
	res = e.Run(t.Context(), baseRequest("/bin/sh", "-c", fmt.Sprintf(`echo before; setsid sh -c 'echo $$ > %[1]s; exec sleep %[2]s' &
while [ ! -s %[1]s ]; do sleep 0.01; done; echo after`, held, token)), nil)
	if took := time.Since(began); took >= pipeDrainDelay {
		t.Errorf("an escapee holding stdout: Run took %v, waiting for the pipe", took)
	}
	if left := procsWith(t, "sleep", token); len(left) > 0 {
		killAll(left)
		t.Fatalf("an escapee holding stdout outlived the order: %v", left)
	}
	if res.Adopted != 1 || res.Verified != VerifiedSubreaper || res.Escaped || string(res.Stdout.Content) != "before\nafter\n" {
		t.Errorf("an escapee holding stdout: adopted %d, verified %q, escaped %v, stdout %q; want 1, %q, false, before and after",
			res.Adopted, res.Verified, res.Escaped, res.Stdout.Content, VerifiedSubreaper)
	}
	// A daemon that forks again in its new session and waits for its
	// child, run as another user: the worker ends the daemon, is handed
	// its child, and ends that too.
	if os.Geteuid() == 0 {
		// Under /tmp: t.TempDir's parent is closed to the other user.
		shared, err := os.MkdirTemp("", "subreaper")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(shared)
		if err := os.Chmod(shared, 0o777); err != nil {
			t.Fatal(err)
		}
		marker := filepath.Join(shared, "nested")
		req := baseRequest("/bin/sh", "-c", fmt.Sprintf(`setsid sh -c 'sleep %[2]s & echo $! > %[1]s; wait' </dev/null >/dev/null 2>&1 &
while [ ! -s %[1]s ]; do sleep 0.01; done`, marker, token))
		req.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
		res := e.Run(t.Context(), req, nil)
		if res.ExitCode == nil || *res.ExitCode != 0 || res.StartErr != nil {
			t.Fatalf("nested daemon: %+v", res)
		}
		if left := procsWith(t, "sleep", token); len(left) > 0 {
			killAll(left)
			t.Fatalf("nested daemon: its child outlived the order: %v", left)
		}
		if res.Adopted != 2 || res.Verified != VerifiedSubreaper || res.Escaped {
			t.Errorf("nested daemon: adopted %d, verified %q, escaped %v; want 2, %q, false", res.Adopted, res.Verified, res.Escaped, VerifiedSubreaper)
		}
	}
	// An order that forks nothing, and one whose background process stays
	// in its group: nothing escaped, and nothing of them is left.
	for _, script := range []string{"true", "sleep 100 & sleep 0.05"} {
		res := e.Run(t.Context(), baseRequest("/bin/sh", "-c", script), nil)
		if res.Adopted != 0 || res.Verified != VerifiedSubreaper || res.Escaped {
			t.Errorf("%q: adopted %d, verified %q, escaped %v; want 0, %q, false", script, res.Adopted, res.Verified, res.Escaped, VerifiedSubreaper)
		}
	}
	// An orphan of an earlier order that outlived its end and died since
	// (here: one forked before the order, left by a shell): reaped at the
	// next order's end, not left a zombie of the worker for good.
	stray := exec.Command("/bin/sh", "-c", "sleep 0.1 & echo $!")
	out, err := stray.Output()
	if err != nil {
		t.Fatal(err)
	}
	strayPid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	for {
		if st, err := readStat(strayPid); err != nil || !st.alive() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.Run(t.Context(), baseRequest("/bin/true"), nil)
	if zombies := zombieChildren(t); len(zombies) > 0 {
		t.Errorf("the orders left zombie children of the worker: %v", zombies)
	}
}

// procsWith lists the live processes whose command is comm with argument
// arg, from /proc.
func procsWith(t *testing.T, comm, arg string) []int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 2 && filepath.Base(args[0]) == comm && args[1] == arg {
			pid, _ := strconv.Atoi(filepath.Base(d))
			if st, err := readStat(pid); err == nil && st.alive() {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// killAll SIGKILLs what a test found left over, so that it does not
// outlive the test.
func killAll(pids []int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}
