package executor

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testCgroupParent creates a cgroup v2 directory for the test to use as
// worker.cgroup, and removes it (killing what is left in it) afterwards.
// Without root and a writable cgroup2 mount it skips, but under CI=true it
// fails: the cgroup path must be tested there.
func testCgroupParent(t testing.TB) string {
	t.Helper()
	unavailable := func(format string, args ...any) string {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("cgroup tests need root and a writable cgroup2 mount (CI=true): "+format, args...)
		}
		t.Skipf("cgroup tests need root and a writable cgroup2 mount: "+format, args...)
		return ""
	}
	if os.Geteuid() != 0 {
		return unavailable("not root")
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return unavailable("%v", err)
	}
	mount := cgroup2Mount(string(mountinfo))
	if mount == "" {
		return unavailable("no cgroup2 filesystem is mounted")
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	parent := filepath.Join(mount, "orderly-test-"+hex.EncodeToString(suffix))
	if err := os.Mkdir(parent, 0o755); err != nil {
		return unavailable("%v", err)
	}
	t.Cleanup(func() {
		if err := (&orderCgroup{path: parent}).end(); err != nil {
			t.Errorf("clean up test cgroup: %v", err)
		}
	})
	if err := CheckCgroupParent(parent); err != nil {
		return unavailable("%v", err)
	}
	return parent
}

// cgroup2Mount returns the mount point of the whole cgroup2 hierarchy from
// mountinfo, or "".
func cgroup2Mount(mountinfo string) string {
	for line := range strings.SplitSeq(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			return f[4]
		}
	}
	return ""
}

// TestRunCgroupKillsEscapee runs an order in its own cgroup: a process
// that left the order's session with setsid, and holds stdout open, is
// killed at the end of the order, and Run does not wait for it.
func TestRunCgroupKillsEscapee(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	fifo := filepath.Join(t.TempDir(), "escaped")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	req := sh("sleep 100 & echo $!; setsid sh -c 'echo $$; echo > " + fifo + "; exec sleep 100' & read x < " + fifo)
	req.CgroupParent = parent
	req.CgroupName = "order-escapee"
	var process Process
	req.OnStart = func(p Process, _ bool) error { process = p; return nil }
	start := time.Now()
	res := newTestExecutor(t).Run(t.Context(), req, nil)
	took := time.Since(start)
	if exitCode(t, res) != 0 {
		t.Fatalf("sh failed: %s", res.Stderr.Content)
	}
	lines := strings.Fields(string(res.Stdout.Content))
	if len(lines) != 2 {
		t.Fatalf("stdout = %q, want two pids", res.Stdout.Content)
	}
	child, escapee := firstLinePID(t, []byte(lines[0])), firstLinePID(t, []byte(lines[1]))
	t.Cleanup(func() { _ = unix.Kill(escapee, unix.SIGKILL) })
	if st, err := readStat(escapee); err == nil && st.session == res.Pid {
		t.Fatalf("the escapee is in the order's session: the test did not test an escape")
	}
	if res.Verified != VerifiedCgroup || !res.GroupGone {
		t.Errorf("Verified=%q GroupGone=%v, want cgroup true", res.Verified, res.GroupGone)
	}
	assertGroupGone(t, res, child, escapee)
	if took >= pipeDrainDelay {
		t.Errorf("Run took %v: it waited for the escapee's pipe instead of killing it", took)
	}
	want := filepath.Join(parent, "order-escapee")
	if process.Cgroup != want || res.Process.Cgroup != want {
		t.Errorf("Process.Cgroup = %q (Result %q), want %q", process.Cgroup, res.Process.Cgroup, want)
	}
	if _, err := os.Stat(want); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the order's cgroup was not removed: %v", err)
	}
}

// TestRunCgroupStartRefused: a cgroup that cannot be made is a start
// error, never a silent run without containment.
func TestRunCgroupStartRefused(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	// A directory of the name that is no cgroup is not taken for an
	// earlier attempt's cgroup, nor removed (TestRunCgroupOfAnEarlierAttempt).
	notCgroup := t.TempDir()
	if err := os.Mkdir(filepath.Join(notCgroup, "order-taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ parent, name string }{
		{notCgroup, "order-taken"},
		{parent, "../escape"},
		{parent, "cgroup.procs"},
		{parent, ""},
		{t.TempDir(), "order-x"}, // not a cgroup: clone3 refuses it
	} {
		req := baseRequest("/bin/true")
		req.CgroupParent, req.CgroupName = tt.parent, tt.name
		res := newTestExecutor(t).Run(t.Context(), req, nil)
		if res.StartErr == nil || res.Pid != 0 {
			t.Errorf("parent %s name %q: StartErr=%v Pid=%d, want a start error", tt.parent, tt.name, res.StartErr, res.Pid)
		}
	}
	if _, err := os.Stat(filepath.Join(parent, "escape")); err == nil {
		t.Error("a cgroup name climbed out of its parent")
	}
	if _, err := os.Stat(filepath.Join(notCgroup, "order-taken")); err != nil {
		t.Errorf("a directory that is no cgroup was removed: %v", err)
	}
}

// TestReapCgroupDeadWorker: the worker dies while its order runs in a
// cgroup; Reap kills everything in it, the setsid escapee included.
func TestReapCgroupDeadWorker(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	fifo := filepath.Join(t.TempDir(), "escaped")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fo := startFakeWorker(t, "sleep 100 & echo $!; setsid sh -c 'echo $$; echo > "+fifo+"; exec sleep 100' & read x < "+fifo+"; echo ready; wait", parent)
	fo.kill9(t)
	if len(fo.pids) != 2 {
		t.Fatalf("pids %v, want the child and the escapee", fo.pids)
	}
	for _, pid := range fo.pids {
		t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
		if !processAlive(pid) {
			t.Fatalf("%d died with the worker: nothing left to reap", pid)
		}
	}
	if !strings.HasPrefix(fo.process.Cgroup, parent+"/") {
		t.Fatalf("Process.Cgroup = %q, want one under %s", fo.process.Cgroup, parent)
	}
	res := Reap(t.Context(), fo.process, newTestLogger(t))
	if res.Err != nil || !res.Found || res.Verified != VerifiedCgroup {
		t.Fatalf("Reap = %+v, want found and verified by cgroup", res)
	}
	for _, pid := range fo.pids {
		if !slices.Contains(res.Killed, pid) {
			t.Errorf("Killed = %v, missing %d", res.Killed, pid)
		}
	}
	waitDead(t, fo.pids...)
	if _, err := os.Stat(fo.process.Cgroup); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the order's cgroup was not removed: %v", err)
	}
	again := Reap(t.Context(), fo.process, newTestLogger(t))
	if again.Err != nil || again.Found || again.Verified != VerifiedCgroup {
		t.Errorf("second Reap = %+v, want nothing found, verified by cgroup", again)
	}
}

// TestReapCgroupWithoutRecord: the worker died after the start but before
// it recorded the process; the worker taking over knows the order's cgroup
// by its name alone, and that is enough to reap it.
func TestReapCgroupWithoutRecord(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	fo := startFakeWorker(t, "sleep 100 & echo $!; setsid sleep 100 & echo $!; echo ready; wait", parent)
	fo.kill9(t)
	for _, pid := range fo.pids {
		t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
	}
	boot, err := CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	res := Reap(t.Context(), Process{Cgroup: fo.process.Cgroup, BootID: boot}, newTestLogger(t))
	if res.Err != nil || !res.Found || res.Verified != VerifiedCgroup {
		t.Fatalf("Reap = %+v, want found and verified by cgroup", res)
	}
	waitDead(t, fo.pids...)
}

func TestOwnCgroupDir(t *testing.T) {
	t.Parallel()
	const hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n" +
		"40 31 0:37 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
	const unified = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	const container = "30 25 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	for _, tt := range []struct {
		name, self, mounts, want string
	}{
		{"unified", "0::/system.slice/orderly-worker.service\n", unified, "/sys/fs/cgroup/system.slice/orderly-worker.service"},
		{"hybrid", "9:name=systemd:/system.slice/x.service\n0::/system.slice/x.service\n", hybrid, "/sys/fs/cgroup/unified/system.slice/x.service"},
		{"container bind mount", "0::/kubepods/pod1/worker\n", container, "/sys/fs/cgroup/worker"},
		{"outside the container's mount", "0::/kubepods/pod2\n", container, ""},
		{"root cgroup (refused later, by chooseCgroupParent)", "0::/\n", unified, "/sys/fs/cgroup"},
		{"cgroup v1 only", "1:pids:/x\n", unified, ""},
		{"no cgroup2 mount", "0::/x\n", "40 31 0:37 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", ""},
	} {
		got, err := ownCgroupDir([]byte(tt.self), []byte(tt.mounts))
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("%s: ownCgroupDir = %q, %v, want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestDelegatedDir(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	own := filepath.Join(parent, "worker")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		own    string
		marked []string
		want   string
	}{
		{"own cgroup delegated", own, []string{own}, own},
		{"DelegateSubgroup: the parent is", own, []string{parent}, parent},
		{"not delegated", own, nil, ""},
		{"never the root", parent, []string{filepath.Dir(parent)}, ""},
	} {
		got, err := delegatedDir(tt.own, func(dir string) bool { return slices.Contains(tt.marked, dir) })
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("%s: delegatedDir = %q, %v, want %q", tt.name, got, err, tt.want)
		}
	}
}

// TestChooseCgroupParent: auto takes a delegated cgroup, or the worker's
// own cgroup where no systemd runs the machine (a container, another
// init), never one systemd manages without delegation, nor the root.
func TestChooseCgroupParent(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	own := filepath.Join(parent, "worker")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(parent)
	for _, tt := range []struct {
		name    string
		own     string
		marked  []string
		systemd bool
		want    string
	}{
		{"delegated under systemd", own, []string{own}, true, own},
		{"delegated, no systemd", own, []string{own}, false, own},
		{"not delegated under systemd", own, nil, true, ""},
		{"no systemd: its own cgroup", own, nil, false, own},
		{"no systemd, in the root cgroup", root, nil, false, ""},
	} {
		got, why, err := chooseCgroupParent(tt.own, func(dir string) bool { return slices.Contains(tt.marked, dir) }, tt.systemd)
		if got != tt.want || (err == nil) != (tt.want != "") || (err == nil && why == "") {
			t.Errorf("%s: chooseCgroupParent = %q, %q, %v, want %q", tt.name, got, why, err, tt.want)
		}
	}
}

func TestResolveCgroupParent(t *testing.T) {
	t.Parallel()
	for _, off := range []string{"", CgroupOff} {
		if parent, note, err := ResolveCgroupParent(off); parent != "" || note == "" || err != nil {
			t.Errorf(`%q = %q, %q, %v, want off`, off, parent, note, err)
		}
	}
	for _, bad := range []string{"relative/path", t.TempDir(), "/nonexistent/cgroup"} {
		if _, _, err := ResolveCgroupParent(bad); err == nil {
			t.Errorf("%q accepted as a cgroup parent", bad)
		}
	}
	// Whatever cgroup this test runs in, auto is never an error: without
	// a delegated cgroup it falls back to process groups, saying why.
	parent, note, err := ResolveCgroupParent(CgroupAuto)
	if err != nil || note == "" {
		t.Errorf("auto = %q, %q, %v", parent, note, err)
	}
	if parent != "" {
		if err := CheckCgroupParent(parent); err != nil {
			t.Errorf("auto chose %s: %v", parent, err)
		}
	}
	// on is auto without the fallback.
	on, _, err := ResolveCgroupParent(CgroupOn)
	if on != parent || (err == nil) != (parent != "") {
		t.Errorf("on = %q, %v; auto chose %q", on, err, parent)
	}
}

func TestResolveCgroupParentExplicit(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	got, _, err := ResolveCgroupParent(parent + "/")
	if err != nil || got != parent {
		t.Errorf("ResolveCgroupParent(%q) = %q, %v", parent+"/", got, err)
	}
}

// TestRunCgroupOfAnEarlierAttempt: an order's cgroup is named after the
// order, so an idempotent order requeued after its worker vanished runs its
// next attempt under the same name. When the first attempt's cgroup was
// left (still holding a process that survived the reap, or emptied and
// never removed), the next attempt failed to start ("file exists"). The
// executor now ends the earlier attempt's cgroup, which must not run on
// next to the new attempt, and starts the new one in a cgroup of its own.
func TestRunCgroupOfAnEarlierAttempt(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	e := newTestExecutor(t)
	for _, populated := range []bool{true, false} {
		name := fmt.Sprintf("order-earlier-%v", populated)
		left := filepath.Join(parent, name)
		if err := os.Mkdir(left, 0o755); err != nil {
			t.Fatal(err)
		}
		var old *exec.Cmd
		if populated {
			old = exec.Command("sleep", "300")
			if err := old.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = old.Process.Kill(); _ = old.Wait() }()
			if err := os.WriteFile(filepath.Join(left, "cgroup.procs"), []byte(strconv.Itoa(old.Process.Pid)), 0); err != nil {
				t.Fatal(err)
			}
		}
		req := baseRequest("/bin/sh", "-c", "cat /proc/self/cgroup")
		req.CgroupParent, req.CgroupName = parent, name
		res := e.Run(t.Context(), req, nil)
		if res.StartErr != nil {
			t.Fatalf("populated %v: the next attempt did not start: %v", populated, res.StartErr)
		}
		if res.ExitCode == nil || *res.ExitCode != 0 || res.Verified != VerifiedCgroup {
			t.Errorf("populated %v: exit %v, verified %q; want 0, %q", populated, res.ExitCode, res.Verified, VerifiedCgroup)
		}
		if !strings.Contains(string(res.Stdout.Content), "/"+name+"\n") {
			t.Errorf("populated %v: the order ran in %q, not in its cgroup", populated, res.Stdout.Content)
		}
		if populated {
			// From outside: the earlier attempt's process is dead (a
			// zombie of this test, which started it).
			if st, err := readStat(old.Process.Pid); err == nil && st.alive() {
				t.Errorf("the earlier attempt's process %d is still alive", old.Process.Pid)
			}
		}
		if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("populated %v: the order's cgroup is left after its end: %v", populated, err)
		}
	}
}

// TestCgroupFreezeKill: on a kernel without cgroup.kill (Linux 5.2 – 5.13)
// an order's cgroup is frozen and each of its processes killed. Escapees
// that left the session and a loop that keeps forking new sessions are
// all dead, and the cgroup removed, when end returns.
func TestCgroupFreezeKill(t *testing.T) {
	t.Parallel()
	parent := testCgroupParent(t)
	dir := t.TempDir()
	chain := filepath.Join(dir, "chain.sh")
	if err := os.WriteFile(chain, []byte(`echo "$2" >> "$1"
sleep 0.02
[ "$2" -gt 0 ] && setsid sh "$0" "$1" $(($2 - 1)) </dev/null >/dev/null 2>&1 &
exec sleep 300
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cg, fd, _, err := createOrderCgroup(parent, "order-frozen")
	if err != nil {
		t.Fatal(err)
	}
	cg.freeze = true
	cmd := exec.Command("sh", "-c", `i=0; while [ $i -lt 5 ]; do setsid sleep 300 </dev/null >/dev/null 2>&1 & i=$((i+1)); done
sh "$1" "$2" 3000 </dev/null >/dev/null 2>&1 &
until [ "$(wc -l < "$2")" -ge 10 ] 2>/dev/null; do sleep 0.01; done; echo ready; exec sleep 300`, "_", chain, filepath.Join(dir, "links"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = unix.Close(fd)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("the order said %q, want ready", line)
	}
	pids, err := cg.procs()
	if err != nil || len(pids) < 15 {
		t.Fatalf("the cgroup holds %v (%v), want the leader, 5 sleeps and 10 links of the chain", pids, err)
	}
	if err := cg.end(); err != nil {
		t.Fatalf("end: %v", err)
	}
	for _, pid := range pids {
		if pid != cmd.Process.Pid && processAlive(pid) {
			t.Errorf("process %d of the frozen cgroup is alive", pid)
		}
	}
	if _, err := os.Stat(cg.path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the cgroup was not removed: %v", err)
	}
}
