package executor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a fake worker: started with fakeWorkerEnv set,
// it runs one order with the executor, reports it on stdout and keeps
// running it until it is killed. That gives the tests a worker to kill -9
// or freeze while its order's processes run.
const (
	fakeWorkerEnv       = "ORDERLY_EXECUTOR_FAKE_WORKER"
	fakeScriptEnv       = "ORDERLY_EXECUTOR_FAKE_SCRIPT"
	fakeCgroupParentEnv = "ORDERLY_EXECUTOR_FAKE_CGROUP_PARENT"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeWorkerEnv) == "1" {
		os.Exit(fakeWorker())
	}
	if os.Getenv(forkProbeEnv) == "1" {
		os.Exit(forkProbe())
	}
	if m := os.Getenv(deadLeaderEnv); m != "" {
		os.Exit(deadLeader(m))
	}
	os.Exit(m.Run())
}

// fakeWorker runs the script in fakeScriptEnv as an order. It prints
// "process <json>" from OnStart, then the order's stdout line by line.
func fakeWorker() int {
	var mu sync.Mutex
	say := func(p []byte) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = os.Stdout.Write(p)
	}
	req := sh(os.Getenv(fakeScriptEnv))
	req.Timeout = 0
	req.CaptureStderr = false
	req.CgroupParent = os.Getenv(fakeCgroupParentEnv)
	req.CgroupName = "order-fake-" + strconv.Itoa(os.Getpid())
	reported := make(chan struct{})
	req.OnStart = func(p Process, _ bool) error {
		defer close(reported)
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		say(append(append([]byte("process "), b...), '\n'))
		return nil
	}
	req.OnOutput = func(stream string, p []byte) {
		<-reported // the process line comes first
		say(p)
	}
	res := New(nil).Run(context.Background(), req, nil)
	fmt.Fprintf(os.Stderr, "fake worker: order ended: %+v\n", res)
	return 0
}

// fakeOrder is an order run by a fake worker process.
type fakeOrder struct {
	worker  *exec.Cmd
	process Process
	// pids are the numbers the script printed before "ready".
	pids []int
}

// startFakeWorker starts a fake worker running script, which must print
// pids one per line and then "ready", and waits for that.
func startFakeWorker(t *testing.T, script, cgroupParent string) *fakeOrder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeWorkerEnv+"=1", fakeScriptEnv+"="+script, fakeCgroupParentEnv+"="+cgroupParent)
	cmd.Stderr = t.Output()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fake worker: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	fo := &fakeOrder{worker: cmd}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-deadline:
			t.Fatalf("fake worker did not get ready; so far %+v", fo)
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("fake worker ended before ready; so far %+v", fo)
			}
			switch {
			case line == "ready":
				if fo.process.PID == 0 {
					t.Fatal("fake worker ready without reporting its process")
				}
				go func() { // keep the pipe drained
					for range lines {
					}
				}()
				return fo
			case strings.HasPrefix(line, "process "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "process ")), &fo.process); err != nil {
					t.Fatalf("fake worker printed %q: %v", line, err)
				}
			default:
				pid, err := strconv.Atoi(strings.TrimSpace(line))
				if err != nil {
					t.Fatalf("fake worker printed %q", line)
				}
				fo.pids = append(fo.pids, pid)
			}
		}
	}
}

// kill9 kills the fake worker the way a crash or the OOM killer would, and
// reaps it.
func (fo *fakeOrder) kill9(t *testing.T) {
	t.Helper()
	if err := fo.worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill fake worker: %v", err)
	}
	_ = fo.worker.Wait()
}

// waitDead waits until none of pids is alive: a pidfd becomes readable
// when its process exits.
func waitDead(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err == unix.ESRCH {
			continue
		}
		if err != nil {
			t.Fatalf("pidfd_open(%d): %v", pid, err)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(max(time.Until(deadline).Milliseconds(), 0)))
		unix.Close(fd)
		if err != nil && err != unix.EINTR {
			t.Fatalf("poll pidfd of %d: %v", pid, err)
		}
		if n == 0 && processAlive(pid) {
			t.Errorf("process %d is still alive", pid)
		}
	}
}
