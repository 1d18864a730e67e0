// Package timerslack starts a command with a timer slack other than the
// process's own. Linux lets the kernel end a thread's timed sleeps up to
// its timer slack late, to serve several with one wake-up; a new process
// takes the slack of the thread that forked it and keeps it through exec.
// orderly's server commands run with milliseconds of slack for Go's
// runtime monitor's sake (cmd/orderly's timerslack.go); the programs they
// start (an order's command, PostgreSQL) must keep the one the operator's
// environment gave.
package timerslack

import (
	"os/exec"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Own is the calling thread's timer slack: a Go program's threads all
// have the process's, as none sets its own for longer than Start does.
func Own() (time.Duration, error) {
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	return time.Duration(ns), err
}

// Start starts cmd from a thread whose timer slack is d for the fork,
// then gives the thread back own (its slack before, from Own) before any
// other goroutine runs on it. d <= 0, or d == own, starts cmd as it is.
// A set that fails leaves the thread's slack: the command then runs with
// the process's, as it would without Start.
func Start(cmd *exec.Cmd, d, own time.Duration) error {
	if d <= 0 || d == own {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(d.Nanoseconds()), 0, 0, 0) == nil {
		defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(own.Nanoseconds()), 0, 0, 0)
	}
	return cmd.Start()
}
