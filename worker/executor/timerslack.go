package executor

import (
	"os/exec"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// OrdersTimerSlack has the commands of the orders Run from now on start
// with the timer slack d instead of the one they would inherit from the
// thread that starts them: `orderly worker` runs with a slack of
// milliseconds for its runtime monitor's sake (cmd/orderly's
// timerslack.go), which an order's `sleep 0.001` must not inherit. Call
// it before the first Run, from any of the process's threads: they all
// have the slack the worker runs with, which it reads here to put back.
// d <= 0, or a slack that cannot be read, leaves the commands with what
// they inherit.
func (e *Executor) OrdersTimerSlack(d time.Duration) {
	own, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if d <= 0 || err != nil || time.Duration(own) == d {
		return
	}
	e.ordersSlack, e.ownSlack = d, time.Duration(own)
}

// start starts cmd, from a thread whose timer slack is the orders' for
// the fork when OrdersTimerSlack set one: the child inherits the forking
// thread's slack and keeps it through its exec. The thread gets its own
// back before any other goroutine runs on it.
func (e *Executor) start(cmd *exec.Cmd) error {
	if e.ordersSlack <= 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// A set that fails leaves the thread's slack: the order then runs
	// with the worker's, as it would without OrdersTimerSlack.
	if unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(e.ordersSlack.Nanoseconds()), 0, 0, 0) == nil {
		defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(e.ownSlack.Nanoseconds()), 0, 0, 0)
	}
	return cmd.Start()
}
