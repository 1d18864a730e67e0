package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orderly-run/orderly/api"
)

func TestSlackEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin:/bin", "HOME=/root"}
	worker := []string{"orderly", "worker", "--host", "h"}
	for _, c := range []struct {
		name    string
		args    []string
		environ []string
		current time.Duration
		run     bool
	}{
		{"a separate worker", worker, base, kernelTimerSlack, true},
		{"a worker after a flag", []string{"/usr/bin/orderly", "--help", "worker"}, base, kernelTimerSlack, true},
		{"the run again", worker, append(slices.Clone(base), ordersTimerSlackEnv+"=50000"), serverTimerSlack, false},
		{"the operator's slack (TimerSlackNSec=)", worker, base, time.Millisecond, false},
		{"a stale marker replaced", worker, append(slices.Clone(base), ordersTimerSlackEnv+"=7"), kernelTimerSlack, true},
		{"serve", []string{"orderly", "serve"}, base, kernelTimerSlack, true},
		{"api", []string{"orderly", "api", "--listen", ":8080"}, base, kernelTimerSlack, true},
		{"serve with the operator's slack", []string{"orderly", "serve"}, base, 20 * time.Microsecond, false},
		{"migrate", []string{"orderly", "migrate", "up"}, base, kernelTimerSlack, false},
		{"fleet-sim", []string{"orderly", "fleet-sim"}, base, kernelTimerSlack, false},
		{"a client command", []string{"orderly", "submit", "--host", "worker", "true"}, base, kernelTimerSlack, false},
		{"no args", nil, base, kernelTimerSlack, false},
	} {
		env, ok := slackEnv(c.args, c.environ, c.current)
		if ok != c.run {
			t.Errorf("%s: run again %v, want %v", c.name, ok, c.run)
			continue
		}
		if !ok {
			continue
		}
		want := append(slices.Clone(base), ordersTimerSlackEnv+"=50000")
		if !slices.Equal(env, want) {
			t.Errorf("%s: environment %q, want %q", c.name, env, want)
		}
		if got := ordersTimerSlack(env); got != kernelTimerSlack {
			t.Errorf("%s: the orders' slack read back %s, want %s", c.name, got, kernelTimerSlack)
		}
	}
	if got := ordersTimerSlack(base); got != 0 {
		t.Errorf("no marker: the orders' slack %s, want 0 (inherited)", got)
	}
}

// atKernelSlack runs start (which starts a real orderly process) from a
// thread whose timer slack is the kernel's default, which the process
// inherits (the test's own process may have been given another).
func atKernelSlack(t *testing.T, start func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(kernelTimerSlack.Nanoseconds()), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(own), 0, 0, 0)
	start()
}

// startWorkerAtKernelSlack starts a real `orderly worker` at the
// kernel's default slack (atKernelSlack).
func startWorkerAtKernelSlack(t *testing.T, p *busServe, host string) *os.Process {
	t.Helper()
	var w *os.Process
	atKernelSlack(t, func() { w = p.startWorker(t, host) })
	return w
}

// slackOf is the timer slack of process pid, in ns as /proc says it.
func slackOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// runTrue runs one order of `true` on host and waits for its end.
func runTrue(t *testing.T, p *busServe, host string) {
	t.Helper()
	code, b := p.do(t, "POST", "/v1/orders?wait=60", map[string]any{"host": host, "command": "true"})
	var o api.Order
	if code != http.StatusOK || json.Unmarshal(b, &o) != nil || o.Status != "succeeded" {
		t.Fatalf("order on %s: %d %s", host, code, b)
	}
}

// TestWorkerRunsWithTimerSlack starts the real binary: `orderly worker`
// runs with serverTimerSlack, and an order's command with the slack the
// worker was started with.
func TestWorkerRunsWithTimerSlack(t *testing.T) {
	p := startBusServe(t, serveDataDir(t, "orderly-slack-"), nil, "ORDERLY_NATS__WORKERS=w2")
	w := startWorkerAtKernelSlack(t, p, "w2")
	code, b := p.do(t, "POST", "/v1/orders?wait=60", map[string]any{"host": "w2", "command": "cat", "args": []string{"/proc/self/timerslack_ns"}})
	var o api.Order
	if code != http.StatusOK || json.Unmarshal(b, &o) != nil || o.Status != "succeeded" || o.Result == nil {
		t.Fatalf("order on the worker: %d %s", code, b)
	}
	if got, want := strings.TrimSpace(o.Result.Stdout.Content), strconv.FormatInt(kernelTimerSlack.Nanoseconds(), 10); got != want {
		t.Errorf("the order's command ran with a timer slack of %s ns, want %s (the worker's before it raised its own)", got, want)
	}
	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", w.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(own)), strconv.FormatInt(serverTimerSlack.Nanoseconds(), 10); got != want {
		t.Errorf("the worker runs with a timer slack of %s ns, want %s", got, want)
	}
}

// TestBusyWorkerWakesLessPerOrder counts the voluntary context switches
// of a real `orderly worker`'s threads over 100 sequential orders of
// `true`: each is a thread that blocked, and a wake-up after it. With the
// kernel's 50 µs of timer slack, Go's runtime monitor, woken by the first
// system call after each idle stretch, polled every ~70 µs until the
// worker was idle again: 34 – 41 switches an order at load 5 – 8, 23 of
// them the monitor's sleeps (perf). With serverTimerSlack its polls come
// ~5 ms apart: 11 – 15 (docs/decisions.md, "A worker process's CPU per
// order: its runtime monitor's polls (hD29)"). The bound lies between.
func TestBusyWorkerWakesLessPerOrder(t *testing.T) {
	p := startBusServe(t, serveDataDir(t, "orderly-slack-busy-"), nil, "ORDERLY_NATS__WORKERS=w2")
	w := startWorkerAtKernelSlack(t, p, "w2")
	runTrue(t, p, "w2") // the connections and the consumer warmed up

	const orders, most = 100, 25
	before := voluntarySwitches(t, w.Pid)
	for range orders {
		runTrue(t, p, "w2")
	}
	n := voluntarySwitches(t, w.Pid) - before
	t.Logf("the worker's threads: %d voluntary context switches in %d orders (%.1f an order)", n, orders, float64(n)/orders)
	if n > most*orders {
		slack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", w.Pid))
		t.Fatalf("the worker's threads were switched out %.1f times an order, want at most %d (its timer slack: %s ns)",
			float64(n)/orders, most, strings.TrimSpace(string(slack)))
	}
}

// TestServeRunsWithTimerSlack starts the real binary: `orderly serve`
// runs with serverTimerSlack and its runtime monitor awake (one run
// again does both), while an order's command and the managed PostgreSQL
// keep the slack serve was started with.
func TestServeRunsWithTimerSlack(t *testing.T) {
	dir := serveDataDir(t, "orderly-slack-serve-")
	var p *busServe
	atKernelSlack(t, func() { p = startBusServe(t, dir, nil) })
	kernel, raised := strconv.FormatInt(kernelTimerSlack.Nanoseconds(), 10), strconv.FormatInt(serverTimerSlack.Nanoseconds(), 10)
	if got := slackOf(t, p.proc.Pid); got != raised {
		t.Errorf("serve runs with a timer slack of %s ns, want %s", got, raised)
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.proc.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(env), "\x00"), "GODEBUG="+sysmonAwake) {
		t.Errorf("serve's environment has no GODEBUG=%s: %q", sysmonAwake, env)
	}
	code, b := p.do(t, "POST", "/v1/orders?wait=60", map[string]any{"host": "srv", "command": "cat", "args": []string{"/proc/self/timerslack_ns"}})
	var o api.Order
	if code != http.StatusOK || json.Unmarshal(b, &o) != nil || o.Status != "succeeded" || o.Result == nil {
		t.Fatalf("order on serve's worker: %d %s", code, b)
	}
	if got := strings.TrimSpace(o.Result.Stdout.Content); got != kernel {
		t.Errorf("the order's command ran with a timer slack of %s ns, want %s (serve's before it raised its own)", got, kernel)
	}
	pm, err := os.ReadFile(filepath.Join(dir, "pg", "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(pm), "\n")
	pg, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("postmaster.pid: %q", pm)
	}
	if got := slackOf(t, pg); got != kernel {
		t.Errorf("the managed PostgreSQL runs with a timer slack of %s ns, want %s", got, kernel)
	}
}

// monitorThread finds the thread of Go's runtime monitor in the idle
// process pid: kept awake (sysmonAwake), it sleeps in nanosleep between
// its polls, where the other threads of an idle process wait in futex or
// epoll_pwait. Its thread is the one most often seen in nanosleep over
// 60 looks at /proc/<pid>/task/*/syscall.
func monitorThread(t *testing.T, pid int) int {
	t.Helper()
	const nanosleep = "35 " // x86-64; the test runs there
	seen := map[int]int{}
	for range 60 {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil || !strings.HasPrefix(string(b), nanosleep) {
				continue
			}
			tid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			seen[tid]++
		}
		time.Sleep(5 * time.Millisecond) // spacing of the looks, not a wait for an event
	}
	best, most := 0, 0
	for tid, n := range seen {
		if n > most {
			best, most = tid, n
		}
	}
	if most < 30 {
		t.Fatalf("no thread of %d sleeps in nanosleep most of the time (%v): the runtime monitor not found", pid, seen)
	}
	return best
}

// threadSwitches is thread tid's voluntary context switches.
func threadSwitches(t *testing.T, pid, tid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("thread %d: %q", tid, line)
			}
			return n
		}
	}
	t.Fatalf("thread %d: no voluntary_ctxt_switches", tid)
	return 0
}

// TestBusyServeMonitorPollsLessPerOrder counts the voluntary context
// switches of serve's runtime monitor over 100 sequential orders of
// `true` on serve's own worker: each is one of its polls. Kept awake, it
// polls every 20 µs after each processor it takes back from a system
// call; with the kernel's 50 µs of slack those polls came ~70 µs apart,
// 6.1 an order on 4817cd56's binary; with serverTimerSlack 2.1
// (docs/decisions.md, "Serve's timer slack (hD30)"). The bound lies
// between.
func TestBusyServeMonitorPollsLessPerOrder(t *testing.T) {
	var p *busServe
	atKernelSlack(t, func() { p = startBusServe(t, serveDataDir(t, "orderly-slack-serve-busy-"), nil) })
	runTrue(t, p, "srv") // the connections and the consumer warmed up
	mon := monitorThread(t, p.proc.Pid)

	const orders, most = 100, 4
	before, all := threadSwitches(t, p.proc.Pid, mon), voluntarySwitches(t, p.proc.Pid)
	for range orders {
		runTrue(t, p, "srv")
	}
	n := threadSwitches(t, p.proc.Pid, mon) - before
	t.Logf("serve's runtime monitor: %d voluntary context switches in %d orders (%.1f an order); serve's threads: %.1f an order",
		n, orders, float64(n)/orders, float64(voluntarySwitches(t, p.proc.Pid)-all)/orders)
	if n > most*orders {
		t.Fatalf("serve's runtime monitor polled %.1f times an order, want at most %d (serve's timer slack: %s ns)",
			float64(n)/orders, most, slackOf(t, p.proc.Pid))
	}
}
