package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serverTimerSlack is the timer slack `orderly worker`, `serve` and
// `api` run with: the kernel may end any timed sleep of the process's
// threads up to that much late, to serve several with one wake-up. Its
// one effect that matters is on Go's runtime monitor (sysmon). A worker
// leaves it to Go's default (sysmon.go): each system call after an idle
// stretch wakes it from its deep sleep, and it then polls every 20 µs
// until the worker's one processor is idle again. Serve and api keep it
// awake: it polls every 20 µs after each processor it takes back from a
// system call, then backs off to 10 ms. With the kernel's 50 µs of slack
// those polls came ~70 µs apart, each a context switch of the monitor's
// thread; with 5 ms the first poll usually finds the process idle again
// (docs/decisions.md, "A worker process's CPU per order: its runtime
// monitor's polls (hD29)" and "Serve's timer slack (hD30)"). 5 ms is the
// awake monitor's own scale: it polls every 10 ms idle, and Go preempts a
// goroutine after 10 ms. The processes' own timers (leases of seconds, a
// 10 ms wait for a process record, a wait's one-second poll) and the
// runtime's taking back a processor held in a long system call come at
// most that much later; nothing a sync order waits on is a timer that
// runs out.
const serverTimerSlack = 5 * time.Millisecond

// slackCommands are the commands run again with serverTimerSlack.
var slackCommands = map[string]bool{"worker": true, "serve": true, "api": true}

// kernelTimerSlack is Linux's default timer slack for a normal thread:
// a process started with any other value was given it on purpose
// (systemd's TimerSlackNSec=, a parent's prctl), and keeps it.
const kernelTimerSlack = 50 * time.Microsecond

// ordersTimerSlackEnv tells the command run again with serverTimerSlack
// the slack it had before, which the programs it starts get back (its
// orders' commands, serve's managed PostgreSQL): a process inherits its
// parent's slack, and an order's `sleep 0.001` must not take 5 ms. The
// config skips an ORDERLY_ name of no section, and an order's
// environment is built, not passed on.
const ordersTimerSlackEnv = "ORDERLY_ORDERS_TIMER_SLACK_NS"

// slackEnv returns the environment to run a command of slackCommands
// again with after raising its timer slack, or false when args name
// another command or the slack the process has (current) is not the
// kernel's default.
// The slack of the runtime monitor's thread is set as the runtime starts
// it, from the thread that starts it, before main runs: only a process
// that starts with the slack gives it to every thread (a thread may set
// another's only with CAP_SYS_NICE, which orderly's units do not have).
func slackEnv(args, environ []string, current time.Duration) ([]string, bool) {
	if !slackCommands[commandName(args)] || current != kernelTimerSlack {
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

// slacken runs a command of slackCommands again as the same process
// with its timer slack at serverTimerSlack (execve keeps the PID, the
// streams, the listening sockets systemd passed and the slack), and with
// sysmonEnv's GODEBUG for a server command, so that one run again does
// both (keepSysmonAwake then finds its setting there). When the slack
// cannot be read or set, or the run again fails, the command runs as it
// is, with the slack it had. A set that succeeds and leaves the slack as
// it was (a seccomp filter that answers prctl with 0) is not run again:
// the run again would find the kernel's default and run again for ever.
// The slack is a thread's, and execve keeps the calling thread's: the
// goroutine stays on the thread that set it until the exec.
func slacken() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return
	}
	env, ok := slackEnv(os.Args, os.Environ(), time.Duration(ns))
	if !ok {
		return
	}
	if awake, ok := sysmonEnv(os.Args, env); ok {
		env = awake
	}
	if unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(serverTimerSlack.Nanoseconds()), 0, 0, 0) != nil {
		return
	}
	if set, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && time.Duration(set) == serverTimerSlack {
		_ = syscall.Exec("/proc/self/exe", os.Args, env)
	}
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ns), 0, 0, 0)
}

// ordersTimerSlack is the slack the programs a command of slackCommands
// starts (its orders' commands, serve's managed PostgreSQL) start with:
// the one its process had before slacken raised it, 0 (what they
// inherit) when it was not raised.
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
