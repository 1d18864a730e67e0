package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// testCgroupParent makes a cgroup v2 directory for the test to use as
// worker.cgroup and ends it (killing what is left in it) afterwards.
// Without root and a writable cgroup2 mount it skips, but under CI=true it
// fails.
func testCgroupParent(t *testing.T) string {
	t.Helper()
	skip := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root and a writable cgroup2 mount (CI=true): %s", why)
		}
		t.Skipf("needs root and a writable cgroup2 mount: %s", why)
	}
	if os.Geteuid() != 0 {
		skip("not root")
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		skip(err.Error())
	}
	var mount string
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f := strings.Fields(pre); ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			mount = f[4]
		}
	}
	if mount == "" {
		skip("no cgroup2 filesystem is mounted")
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	parent := filepath.Join(mount, "orderly-test-"+hex.EncodeToString(suffix))
	if err := os.Mkdir(parent, 0o755); err != nil {
		skip(err.Error())
	}
	t.Cleanup(func() {
		boot, _ := executor.CurrentBootID()
		if r := executor.Reap(context.Background(), executor.Process{Cgroup: parent, BootID: boot}, nil); r.Err != nil {
			t.Errorf("clean up test cgroup: %v", r.Err)
		}
	})
	if err := executor.CheckCgroupParent(parent); err != nil {
		skip(err.Error())
	}
	return parent
}

// TestMarkedAttemptWithoutRecordIsSweptByItsCgroup: the first worker
// started an order into its cgroup and died before recording the process
// (its leader died with it, a child lived on in the cgroup); the second
// took the host over, marked the attempt interrupted and died before its
// reap. Nothing in PostgreSQL keeps a mark without a process record, so
// the third worker ran the host's next orders next to the child. It now
// ends the cgroups of its host's orders that are not running, found by
// their name, before it runs anything.
func TestMarkedAttemptWithoutRecordIsSweptByItsCgroup(t *testing.T) {
	parent := testCgroupParent(t)
	e := newEnv(t)
	host := "norecord"
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
		Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.TakeHost(t.Context(), host, "test", postgres.Owner{Instance: host + "/first"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(t.Context(), o.ID, host+"/first", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	// The first worker's order, started into its cgroup: what is left of
	// it once its leader died.
	cg := filepath.Join(parent, "order-"+o.ID.String())
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(cg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "60")
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: fd}
	err = child.Start()
	_ = unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = child.Wait(); close(exited) }()
	t.Cleanup(func() { _ = child.Process.Kill(); <-exited })

	if _, _, err := e.store.TakeHost(t.Context(), host, "test", postgres.Owner{Instance: host + "/second"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.InterruptAttempt(t.Context(), o.ID, 1, host+"/second", "interrupted: the second worker's mark", nil); err != nil || !ok {
		t.Fatalf("the second worker's mark: %v %v", ok, err)
	}
	// The next order looks for itself whether the child is dead when it
	// runs: a zombie the test has not reaped yet, or gone. The time the
	// test's own Wait returned is not when the child died: the sweep goes
	// on once the cgroup is empty, which a zombie leaves, and on a loaded
	// machine that goroutine ran after the next order had started.
	next := e.submit(host, "sh", "-c", `s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || exit 0
case $s in Z|X) exit 0;; esac
echo "process $1 is $s" >&2; exit 3`, "_", strconv.Itoa(child.Process.Pid))

	cfg := config.Default().Worker
	cfg.Cgroup = parent
	hp, err := hostpolicy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logger := testenv.Logger(t)
	w := worker.New(worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, hp, executor.New(logger), logger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	ran := waitEnded(t, e, next)
	if ran.Status != order.StatusSucceeded {
		var stderr []byte
		if ran.Result != nil {
			stderr = ran.Result.Stderr.Content
		}
		t.Fatalf("the host ran its next order while the first worker's process still ran in the order's cgroup: %s, %q",
			ran.Status, stderr)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the child, dead when the next order ran, was not reaped by the test")
	}
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the child ended %v, not by SIGKILL", child.ProcessState)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("the order's cgroup is still there: %v", err)
	}
}

// waitEnded waits for order id to end, whichever way, and returns it.
func waitEnded(t *testing.T, e *env, id uuid.UUID) *order.Order {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		o, err := e.store.GetOrder(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if o.Status.Terminal() {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s is still %s after 30 s", id, o.Status)
		}
	}
}
