package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// startWhereSlackIsIgnored starts cmd at the kernel's default slack from
// a thread under a seccomp filter that answers every
// prctl(PR_SET_TIMERSLACK) with success and does nothing, as a sandbox
// that filters prctl may. The thread is locked and never unlocked: it
// ends with the goroutine, and the filter with it.
func startWhereSlackIsIgnored(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the filtered thread exits
		if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(kernelTimerSlack.Nanoseconds()), 0, 0, 0); err != nil {
			errc <- err
			return
		}
		filter := []unix.SockFilter{
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4}, // arch
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.AUDIT_ARCH_X86_64, Jt: 0, Jf: 5},
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // nr
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_PRCTL, Jt: 0, Jf: 3},
			{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 16}, // args[0], low half
			{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.PR_SET_TIMERSLACK, Jt: 0, Jf: 1},
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO}, // errno 0: success
			{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		}
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			errc <- err
			return
		}
		if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestServerCommandWhereSlackIsIgnoredRunsOnce starts the real binary
// where setting the timer slack succeeds and changes nothing: it runs
// itself again once at most, and does its work with the slack it has.
// Before, each run found the kernel's default again and ran itself again,
// for ever, under the same pid.
func TestServerCommandWhereSlackIsIgnoredRunsOnce(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the filter is written for x86-64")
	}
	for _, command := range []string{"api", "worker"} {
		cmd := exec.Command(orderlyBin, command, "--help")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
		startWhereSlackIsIgnored(t, cmd)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("orderly %s --help: %v", command, err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("orderly %s --help still running after 30 s: it runs itself again for ever", command)
		}
	}
}

// TestServerCommandRunAgainKeepsItsName starts the real `orderly api` and
// `orderly worker` at the kernel's slack, so that each runs itself again
// through /proc/self/exe: the process is still named orderly in
// /proc/<pid>/comm (ps, top, pgrep, killall), not "exe".
func TestServerCommandRunAgainKeepsItsName(t *testing.T) {
	for _, command := range []string{"api", "worker"} {
		args := []string{command, "--database-url", "postgres://orderly@127.0.0.1:1/none", "--nats-url", "nats://127.0.0.1:1"}
		if command == "api" {
			args = append(args, "--listen", "127.0.0.1:0")
		} else {
			args = append(args, "--host", "named")
		}
		cmd := exec.Command(orderlyBin, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "ORDERLY_LOG__LEVEL=error"}
		atKernelSlack(t, func() {
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
		})
		pid := cmd.Process.Pid
		waitUntil(t, 30*time.Second, command+" runs itself again", func() bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			return err == nil && strings.Contains(string(b), ordersTimerSlackEnv+"=")
		})
		// The name is set right after the run again: wait for it a while.
		var comm string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil {
				t.Fatal(err)
			}
			if comm = strings.TrimSpace(string(b)); comm == "orderly" {
				break
			}
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if comm != "orderly" {
			t.Errorf("orderly %s run again is named %q in /proc/<pid>/comm, want \"orderly\"", command, comm)
		}
	}
}
