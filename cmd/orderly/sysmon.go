package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// sysmonAwake is the GODEBUG setting serve, api and fleet-sim run with:
// schedtrace at its largest value (2^31-1 ms, 24.8 days). Its one effect
// that matters here is that Go's runtime monitor (sysmon) no longer
// sleeps deeply while every processor is idle. Without it, each time a
// goroutine enters a system call after an idle gap it wakes the monitor
// and resets it to poll every 20 µs for 50 rounds; an order has several
// such gaps (its PostgreSQL round trips, its command), so the monitor
// woke 41 – 51 times per sync order, the largest item of serve's CPU
// (docs/benchmarks.md, "The runtime monitor's wake-ups"; decisions.md,
// "The server commands keep Go's runtime monitor awake"). With it the
// monitor backs off to one poll every 10 ms when nothing happens and
// polls fast only after it had to take a processor back from a blocked
// system call. The price: a scheduler line ("SCHED …") on stderr when the
// machine has been up longer than 24.8 days, at start and every 24.8
// days after, and the scheduler's state printed on a fatal panic.
const sysmonAwake = "schedtrace=2147483647"

// serverCommands are the long-running commands that get sysmonAwake.
// `worker` is not one: the awake monitor polls every 10 ms for as long as
// the process lives, ~100 wake-ups a second that an idle worker otherwise
// does not have (its deep sleep lasts until the next timer), and a worker
// is idle most of its life on most hosts. Awake, it saved ~0.7 ms of the
// worker's CPU per order of `true` (~0.3 ms since the worker's timer
// slack, timerslack.go) and cost ~4 ms a second, so it pays only on a
// host that runs many short orders a second all the time;
// there the operator sets GODEBUG=schedtrace=2147483647 (docs/config.md).
var serverCommands = map[string]bool{"serve": true, "api": true, "fleet-sim": true}

// sysmonEnv returns the environment to run a server command again with,
// or false when args name no server command or GODEBUG already says
// something about schedtrace (the operator's choice, or the run again).
// The runtime reads schedtrace only from the environment at start (a
// //go:debug line refuses it), so main runs the binary again with it.
func sysmonEnv(args, environ []string) ([]string, bool) {
	if !serverCommands[commandName(args)] {
		return nil, false
	}
	env := make([]string, 0, len(environ)+1)
	godebug := sysmonAwake
	for _, kv := range environ {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			env = append(env, kv)
			continue
		}
		for s := range strings.SplitSeq(v, ",") {
			if k, _, _ := strings.Cut(s, "="); strings.TrimSpace(k) == "schedtrace" {
				return nil, false
			}
		}
		if v != "" {
			godebug = v + "," + sysmonAwake
		}
	}
	return append(env, "GODEBUG="+godebug), true
}

// commandName is the first argument after the program that is not a
// flag: the root command has no flags of its own that take a value.
func commandName(args []string) string {
	for _, a := range args[min(1, len(args)):] {
		if a == "--" {
			return ""
		}
		if !strings.HasPrefix(a, "-") {
			return a
		}
	}
	return ""
}

// keepSysmonAwake runs a server command again with sysmonAwake in its
// environment, as the same process (execve keeps the PID, the listening
// sockets systemd passed and the standard streams). When that cannot be
// done (no /proc), the command runs as it is.
func keepSysmonAwake() {
	env, ok := sysmonEnv(os.Args, os.Environ())
	if !ok {
		return
	}
	_ = syscall.Exec("/proc/self/exe", os.Args, env)
}

// commLen is the longest process name Linux keeps (TASK_COMM_LEN less
// its NUL).
const commLen = 15

// nameAfterRunAgain gives a command run again through /proc/self/exe
// (slacken, keepSysmonAwake) back the process name that ps, top, pgrep
// and killall read in /proc/<pid>/comm: execve names a process after the
// base name of the file it runs, here "exe". The name is the one the
// first run had from os.Args[0] (systemd's ExecStart path, a shell's
// command word), cut as the kernel cuts it. The threads the runtime
// started before main keep "exe" (top -H); the process's name is its
// main thread's, which writing /proc/self/comm sets from any thread.
func nameAfterRunAgain() {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil || strings.TrimSpace(string(b)) != "exe" || len(os.Args) == 0 {
		return
	}
	name := filepath.Base(os.Args[0])
	if len(name) > commLen {
		name = name[:commLen]
	}
	if name == "exe" || name == "." || name == "/" {
		return
	}
	_ = os.WriteFile("/proc/self/comm", []byte(name), 0)
}
