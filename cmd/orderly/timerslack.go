package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workerTimerSlack is the timer slack a separate worker runs with: the
// kernel may end any timed sleep of the process's threads up to that much
// late, to serve several with one wake-up. Its one effect that matters
// is on Go's runtime monitor (sysmon), which a worker leaves to Go's
// default (sysmon.go): each system call after an idle stretch wakes it
// from its deep sleep, and it then polls every 20 µs until the worker's
// one processor is idle again. With the kernel's 50 µs of slack those
// polls came ~70 µs apart, 23 of them an order of `true` and each a
// context switch of the monitor's thread; with 5 ms the first poll
// usually finds the worker idle again, and the monitor sleeps
// (docs/decisions.md, "A worker process's CPU per order: its runtime
// monitor's polls (hD29)"). 5 ms is the awake monitor's own scale: serve's
// polls every 10 ms, and Go preempts a goroutine after 10 ms. The worker's
// own timers (leases of seconds, a 10 ms wait for a process record) and
// the runtime's taking back a processor held in a long system call come
// at most that much later; nothing per order waits on a timer that runs
// out.
const workerTimerSlack = 5 * time.Millisecond

// kernelTimerSlack is Linux's default timer slack for a normal thread:
// a worker started with any other value was given it on purpose
// (systemd's TimerSlackNSec=, a parent's prctl), and keeps it.
const kernelTimerSlack = 50 * time.Microsecond

// ordersTimerSlackEnv tells the worker run again with workerTimerSlack
// the slack it had before, which its orders' commands get back: a
// process inherits its parent's slack, and an order's `sleep 0.001` must
// not take 5 ms. The config skips an ORDERLY_ name of no section, and an
// order's environment is built, not passed on.
const ordersTimerSlackEnv = "ORDERLY_ORDERS_TIMER_SLACK_NS"

// slackEnv returns the environment to run `orderly worker` again with
// after raising its timer slack, or false when args name another command
// or the slack the process has (current) is not the kernel's default.
// The slack of the runtime monitor's thread is set as the runtime starts
// it, from the thread that starts it, before main runs: only a process
// that starts with the slack gives it to every thread (a thread may set
// another's only with CAP_SYS_NICE, which a worker's unit does not have).
func slackEnv(args, environ []string, current time.Duration) ([]string, bool) {
	if commandName(args) != "worker" || current != kernelTimerSlack {
		return nil, false
	}
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if name, _, _ := strings.Cut(kv, "="); name != ordersTimerSlackEnv {
			env = append(env, kv)
		}
	}
	return append(env, ordersTimerSlackEnv+"="+strconv.FormatInt(current.Nanoseconds(), 10)), true
}

// slackenWorker runs `orderly worker` again as the same process with its
// timer slack at workerTimerSlack (execve keeps the PID, the streams and
// the slack). When the slack cannot be read or set, or the run again
// fails, the worker runs as it is, with the slack it had.
func slackenWorker() {
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return
	}
	env, ok := slackEnv(os.Args, os.Environ(), time.Duration(ns))
	if !ok {
		return
	}
	if unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(workerTimerSlack.Nanoseconds()), 0, 0, 0) != nil {
		return
	}
	_ = syscall.Exec("/proc/self/exe", os.Args, env)
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ns), 0, 0, 0)
}

// ordersTimerSlack is the slack the worker's orders' commands start
// with: the one its process had before slackenWorker raised it, 0 (what
// they inherit) when it was not raised.
func ordersTimerSlack(environ []string) time.Duration {
	for _, kv := range environ {
		if name, v, _ := strings.Cut(kv, "="); name == ordersTimerSlackEnv {
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil && ns > 0 {
				return time.Duration(ns)
			}
		}
	}
	return 0
}
