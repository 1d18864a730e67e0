package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
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
		{"the run again", worker, append(slices.Clone(base), ordersTimerSlackEnv+"=50000"), workerTimerSlack, false},
		{"the operator's slack (TimerSlackNSec=)", worker, base, time.Millisecond, false},
		{"a stale marker replaced", worker, append(slices.Clone(base), ordersTimerSlackEnv+"=7"), kernelTimerSlack, true},
		{"serve", []string{"orderly", "serve"}, base, kernelTimerSlack, false},
		{"api", []string{"orderly", "api"}, base, kernelTimerSlack, false},
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

// startWorkerAtKernelSlack starts a real `orderly worker` from a thread
// whose timer slack is the kernel's default, which the worker inherits
// (the test's own process may have been given another).
func startWorkerAtKernelSlack(t *testing.T, p *busServe, host string) *os.Process {
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
	return p.startWorker(t, host)
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
// runs with workerTimerSlack, and an order's command with the slack the
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
	if got, want := strings.TrimSpace(string(own)), strconv.FormatInt(workerTimerSlack.Nanoseconds(), 10); got != want {
		t.Errorf("the worker runs with a timer slack of %s ns, want %s", got, want)
	}
}

// TestBusyWorkerWakesLessPerOrder counts the voluntary context switches
// of a real `orderly worker`'s threads over 100 sequential orders of
// `true`: each is a thread that blocked, and a wake-up after it. With the
// kernel's 50 µs of timer slack, Go's runtime monitor, woken by the first
// system call after each idle stretch, polled every ~70 µs until the
// worker was idle again: 34 – 41 switches an order at load 5 – 8, 23 of
// them the monitor's sleeps (perf). With workerTimerSlack its polls come
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
