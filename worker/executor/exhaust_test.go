package executor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// forkProbeEnv makes the test binary a worker that starts one order,
// /bin/true, when told to on stdin, and prints its StartErr
// (forkProbe).
const forkProbeEnv = "ORDERLY_EXECUTOR_FORK_PROBE"

// forkProbe is the worker of TestStartPastThePidsLimitSaysWhichCgroup.
// It makes its Go runtime's threads before it says ready: in a cgroup
// at its pids.max, the runtime could not make one more, which it cannot
// survive (the worker's own hazard of a shared TasksMax=,
// docs/reliability.md); parked threads are reused.
func forkProbe() int {
	// Both counts are set before any thread starts: added one by one, a
	// thread scheduled before the next Add found the count at zero, left
	// started.Wait, and the next Add panicked ("WaitGroup is reused
	// before previous Wait has returned") at a load average of 45.
	var started, done sync.WaitGroup
	started.Add(16)
	done.Add(16)
	for range 16 {
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			started.Done()
			started.Wait()
			runtime.UnlockOSThread()
		}()
	}
	done.Wait()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 1
	}
	res := New(nil).Run(context.Background(), Request{Path: "/bin/true", Timeout: 10 * time.Second}, nil)
	fmt.Printf("start_err: %v\n", res.StartErr)
	return 0
}

// TestStartPastThePidsLimitSaysWhichCgroup: a worker whose pids cgroup
// is at its pids.max (a fork bomb's leftovers, here a sleep) cannot fork
// its order's process; the start error names the cgroup and its limit,
// not only "resource temporarily unavailable". The worker is a process
// of its own (forkProbe) in a cgroup the test makes on the pids
// hierarchy (cgroup v1 here, where cgroup2 has no pids controller); its
// limit bounds every process the test makes there.
func TestStartPastThePidsLimitSaysWhichCgroup(t *testing.T) {
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
		if f, p := strings.Fields(pre), strings.Fields(post); len(f) >= 5 && len(p) >= 3 && p[0] == "cgroup" && hasOption(p[2], "pids") {
			mp = f[4]
		}
	}
	if mp == "" {
		t.Skip("no cgroup v1 pids hierarchy on this machine")
	}
	cg := filepath.Join(mp, "orderly-test-pids-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for unix.Rmdir(cg) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})

	probe := exec.Command(os.Args[0], "-test.run=^$")
	probe.Env = append(os.Environ(), forkProbeEnv+"=1")
	probe.Stderr = t.Output()
	in, err := probe.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := probe.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = probe.Process.Kill()
		_ = probe.Wait()
	})
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("the probe worker did not get ready: %q %v", lines.Text(), lines.Err())
	}
	into := func(pid int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	into(probe.Process.Pid)
	tasks, err := os.ReadFile(filepath.Join(cg, "pids.current"))
	if err != nil {
		t.Fatal(err)
	}
	limit := strings.TrimSpace(string(tasks))
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte(limit), 0); err != nil {
		t.Fatal(err)
	}
	// The leftover: moved in from outside, which a limit does not
	// refuse (only forks count against it).
	left := exec.Command("sleep", "60")
	if err := left.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = left.Process.Kill()
		_ = left.Wait()
	})
	into(left.Process.Pid)

	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() {
		t.Fatalf("the probe worker said nothing of its order: %v", lines.Err())
	}
	got := lines.Text()
	n, _ := strconv.Atoi(limit)
	want := fmt.Sprintf("resource temporarily unavailable (the pids limit of cgroup %s reached: pids.max %d, %d tasks)", cg, n, n+1)
	if !strings.Contains(got, want) {
		t.Fatalf("the order's start past its worker's pids limit: %q, want it to say %q", got, want)
	}
}

// takeDescriptors lowers the test process's RLIMIT_NOFILE to what is
// open now plus a few, and opens /dev/null until none is left; the
// returned func gives them back. Tests that use it are not parallel:
// nothing else of the process may open a file meanwhile.
func takeDescriptors(t *testing.T) (release func()) {
	t.Helper()
	var was unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lower := was
	lower.Cur = uint64(len(open) + 64)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lower); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, f := range held {
				f.Close()
			}
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &was); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// TestOutOfDescriptorsWaitsBoundedAndCancelably: a start that finds no
// file descriptor waits for one, for descriptorWait at most, then fails
// saying it gave up and which limit was reached; a cancel signal during
// the wait ends it at once, Canceled, without starting anything.
func TestOutOfDescriptorsWaitsBoundedAndCancelably(t *testing.T) {
	logs := &strings.Builder{}
	var mu sync.Mutex
	e := New(slog.New(slog.NewTextHandler(lockedWriter{&mu, logs}, nil)))
	e.descriptorWait = 300 * time.Millisecond
	release := takeDescriptors(t)
	res := e.Run(t.Context(), sh("true"), nil)
	if res.StartErr == nil || res.Pid != 0 || res.Canceled ||
		!strings.Contains(res.StartErr.Error(), "too many open files (the worker's open file limit (RLIMIT_NOFILE ") ||
		!strings.Contains(res.StartErr.Error(), "gave up after 300ms") {
		t.Fatalf("Run out of descriptors: StartErr %v, Pid %d, Canceled %v; want the limit named and a give-up after 300ms",
			res.StartErr, res.Pid, res.Canceled)
	}

	// A wait of an hour: only the cancel ends it, and says so.
	e.descriptorWait = time.Hour
	signals := make(chan syscall.Signal, 1)
	signals <- syscall.SIGTERM
	res = e.Run(t.Context(), sh("true"), signals)
	release()
	if !res.Canceled || res.Pid != 0 || !errors.Is(res.StartErr, ErrCanceledBeforeStart) ||
		!strings.Contains(res.StartErr.Error(), "while it waited for a file descriptor") {
		t.Fatalf("Run canceled while out of descriptors: Canceled %v, Pid %d, StartErr %v; want canceled, not started",
			res.Canceled, res.Pid, res.StartErr)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "out of file descriptors"); n != 2 {
		t.Errorf("%d warnings of the two orders' waits, want one each:\n%s", n, logs)
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
