package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// orphanRoleEnv names the role this test binary plays when
// TestFaultProcStaysFrozenWhenItsParentsGroupIsOrphaned runs it again:
// "shell" (a session leader, as a terminal's or a tool's shell) or "test"
// (a job of that shell in a group of its own, as `go test` and its test
// binary are).
const orphanRoleEnv = "ORDERLY_TEST_ORPHAN_ROLE"

// TestFaultProcStaysFrozenWhenItsParentsGroupIsOrphaned freezes a process
// started as startFaultProc starts the fault tests' workers, and a canary
// started in its parent's group (how they were started before), then ends
// the shell that links the parent's group to the session: the kernel sends
// SIGHUP and SIGCONT to a group orphaned with a stopped member, which
// thawed the canary (the premise) and, in the parent's group, the frozen
// worker (its SIGHUP a config reload). The fault process, in a group of its
// own whose parent stays in the session, must stay stopped.
func TestFaultProcStaysFrozenWhenItsParentsGroupIsOrphaned(t *testing.T) {
	shell := exec.Command(os.Args[0])
	shell.Env = append(os.Environ(), orphanRoleEnv+"=shell")
	shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := shell.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := shell.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	shell.Stderr = os.Stderr
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = shell.Process.Kill()
		_ = shell.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the test role's pids: %v", err)
	}
	var test, canary, frozen int
	if _, err := fmt.Sscan(line, &test, &canary, &frozen); err != nil {
		t.Fatalf("the test role's pids %q: %v", line, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(test, syscall.SIGKILL) }) // its Pdeathsig ends the two
	if pg, _ := syscall.Getpgid(canary); pg != test {
		t.Fatalf("canary %d in group %d, want its parent's %d", canary, pg, test)
	}
	for _, pid := range []int{canary, frozen} {
		if st := procState(pid); st != 'T' {
			t.Fatalf("process %d in state %c before the shell ends, want T", pid, st)
		}
	}
	// The shell ends; its job, the test role, goes to a reaper outside
	// the session, and the kernel sends the signals while the shell
	// exits, before Wait returns.
	_ = stdin.Close()
	if err := shell.Wait(); err != nil {
		t.Fatalf("the shell: %v", err)
	}
	if parentPid(test) == shell.Process.Pid {
		t.Fatalf("the test role %d still has the ended shell as its parent", test)
	}
	// The canary's group, the parent's, was orphaned with a stopped
	// member: SIGHUP ended it (or SIGCONT woke it first).
	waitUntil(t, 10*time.Second, "the canary thawed", func() bool { return procState(canary) != 'T' })
	if st := procState(frozen); st != 'T' {
		t.Errorf("the fault process %d is in state %c after its parent's group was orphaned, want T (stopped)", frozen, st)
	}
}

// orphanRole plays role for TestFaultProcStaysFrozenWhenItsParentsGroupIsOrphaned
// and returns the exit code.
func orphanRole(role string) int {
	switch role {
	case "shell":
		// Its job in a group of its own, as a shell with job control
		// starts one; the shell ends when its stdin does.
		job := exec.Command(os.Args[0])
		job.Env = append(os.Environ(), orphanRoleEnv+"=test")
		job.Stdout, job.Stderr = os.Stdout, os.Stderr
		job.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := job.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	case "test":
		// Its own SIGHUP (the group's) is caught, as the test binary
		// catches it when it was started ignoring it.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
		start := func(attr *syscall.SysProcAttr) (int, error) {
			c := exec.Command("sleep", "600")
			c.SysProcAttr = attr
			if err := c.Start(); err != nil {
				return 0, err
			}
			pid := c.Process.Pid
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				return 0, err
			}
			for procState(pid) != 'T' {
				time.Sleep(time.Millisecond)
			}
			return pid, nil
		}
		canary, err := start(&syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		frozen, err := start(faultProcAttr())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(strings.Join([]string{strconv.Itoa(os.Getpid()), strconv.Itoa(canary), strconv.Itoa(frozen)}, " "))
		time.Sleep(10 * time.Minute) // until the test kills it
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", orphanRoleEnv, role)
	return 2
}
