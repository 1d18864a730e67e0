package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
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

// switchesOf sums the voluntary and involuntary context switches of
// pid's threads.
func switchesOf(t *testing.T, pid int) int {
	t.Helper()
	return threadsCount(t, pid, "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
}

// TestBusyServeSwitchesLessPerOrder runs 100 sequential orders of
// `true` on each of two real serves, one order on each in turn so that
// the machine's load weighs on both alike, and counts their threads'
// context switches. One serve is started at the kernel's 50 µs of timer
// slack and raises its own to serverTimerSlack; the other is started at
// 51 µs, an operator's slack, which it keeps: the runtime monitor's 20 µs
// polls after each processor it takes back then come ~70 µs apart, as
// a serve's did before it raised its own (4817cd56). The count is the
// load's, so only the ratio is checked: 0.69 – 0.74 at load 25 – 50,
// 0.99 – 1.06 on 4817cd56's binary (docs/decisions.md, "Serve's timer
// slack (hD30)"). The bound lies between.
func TestBusyServeSwitchesLessPerOrder(t *testing.T) {
	var raised, kept *busServe
	atKernelSlack(t, func() { raised = startBusServe(t, serveDataDir(t, "orderly-slack-serve-busy-"), nil) })
	atKernelSlack(t, func() {
		if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(kernelTimerSlack.Nanoseconds()+1000), 0, 0, 0); err != nil {
			t.Fatal(err)
		}
		kept = startBusServe(t, serveDataDir(t, "orderly-slack-serve-kept-"), nil)
	})
	runTrue(t, raised, "srv") // the connections and the consumers warmed up
	runTrue(t, kept, "srv")

	const orders, most = 100, 0.85
	r0, k0 := switchesOf(t, raised.proc.Pid), switchesOf(t, kept.proc.Pid)
	for range orders {
		runTrue(t, raised, "srv")
		runTrue(t, kept, "srv")
	}
	r, k := float64(switchesOf(t, raised.proc.Pid)-r0)/orders, float64(switchesOf(t, kept.proc.Pid)-k0)/orders
	t.Logf("context switches an order: %.1f with serve's own timer slack (%s ns), %.1f with 51 µs kept (%s ns): ratio %.2f",
		r, slackOf(t, raised.proc.Pid), k, slackOf(t, kept.proc.Pid), r/k)
	if r > most*k {
		t.Fatalf("serve's threads were switched %.1f times an order, %.2f of the %.1f of a serve at 51 µs of slack, want at most %.2f",
			r, r/k, k, most)
	}
}

// TestAPIRunsWithTimerSlack starts a real `orderly api` at the kernel's
// slack, waiting for a database nobody serves: once it has run itself
// again (its environment names the slack it had), it runs with
// serverTimerSlack and its runtime monitor awake.
func TestAPIRunsWithTimerSlack(t *testing.T) {
	cmd := exec.Command(orderlyBin, "api", "--listen", "127.0.0.1:0",
		"--database-url", "postgres://orderly@127.0.0.1:1/none", "--nats-url", "nats://127.0.0.1:1")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "ORDERLY_LOG__LEVEL=error"}
	atKernelSlack(t, func() {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var env []string
	waitUntil(t, 30*time.Second, "api runs itself again", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
		env = strings.Split(string(b), "\x00")
		return err == nil && slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	})
	if !slices.Contains(env, "GODEBUG="+sysmonAwake) {
		t.Errorf("api's environment has no GODEBUG=%s: %q", sysmonAwake, env)
	}
	if got, want := slackOf(t, cmd.Process.Pid), strconv.FormatInt(serverTimerSlack.Nanoseconds(), 10); got != want {
		t.Errorf("api runs with a timer slack of %s ns, want %s", got, want)
	}
}
