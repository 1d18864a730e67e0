package executor

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// openFDs is the number of the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	names, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// goroutinesCreated is the process's count of goroutines created so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestRunGoroutinesPerOrder: an order's streams and its leader's exit are
// served by one goroutine (the pipes' loop, on epoll and a pidfd), not by
// one goroutine per stream and one blocked in waitid: 3 goroutines per
// order of /bin/true with both streams captured before, 4 with stdin
// (docs/benchmarks.md, "The worker's work per order, counted").
// Allocations are bounded too, with headroom: they follow the pids
// handed out on the machine meanwhile (killSession reads them). And the
// loop leaves no descriptor open (pipes, epoll, pidfd).
func TestRunGoroutinesPerOrder(t *testing.T) {
	withStdin := baseRequest("/bin/true")
	withStdin.Stdin = []byte("x")
	for _, tt := range []struct {
		name       string
		req        Request
		goroutines float64
		allocs     float64
	}{
		// Before: 3.00 goroutines, 56 – 60 allocations.
		{"both streams", baseRequest("/bin/true"), 1.5, 0},
		// Before: 4.00 goroutines, 65 – 70 allocations. 56 – 58 on a
		// quiet machine; 60 in all five measures once under CI's go test
		// ./... (2026-12-04 evening), whose forks killSession reads.
		{"stdin and both streams", withStdin, 1.5, 61},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := New(nil)
			ctx := t.Context()
			run := func() {
				res := e.Run(ctx, tt.req, nil)
				if res.ExitCode == nil || *res.ExitCode != 0 || !res.GroupGone {
					t.Fatalf("result %+v", res)
				}
			}
			run()
			const n = 50
			fds := openFDs(t)
			before := goroutinesCreated()
			for range n {
				run()
			}
			if g := float64(goroutinesCreated()-before) / n; g > tt.goroutines {
				t.Errorf("%.2f goroutines created per run, want at most %.1f", g, tt.goroutines)
			}
			if now := openFDs(t); now != fds {
				t.Errorf("%d descriptors open after %d runs, %d before", now, n, fds)
			}
			if tt.allocs > 0 {
				// The fewest of up to five measures: a machine forking
				// meanwhile (other packages' tests under go test ./...)
				// hands out pids that killSession reads, which adds
				// allocations no change of this package made.
				a := testing.AllocsPerRun(n, run)
				for try := 1; try < 5 && a > tt.allocs; try++ {
					a = min(a, testing.AllocsPerRun(n, run))
				}
				if a > tt.allocs {
					t.Errorf("%.0f allocations per run (the fewest of five measures), want at most %.0f", a, tt.allocs)
				}
			}
		})
	}
}

// TestRunConcurrentOrdersKeepTheirOwnStreams: orders run at once by one
// Executor each get their own stdin, stdout and stderr, in full, through
// their own loops (each an epoll instance of its own).
func TestRunConcurrentOrdersKeepTheirOwnStreams(t *testing.T) {
	t.Parallel()
	e := New(nil)
	const orders = 8
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			in := strings.Repeat(fmt.Sprintf("order %d\n", i), 20000) // past a pipe's 64 KiB
			req := sh(`cat; echo "err $1" >&2`)
			req.Argv = append(req.Argv, "sh", strconv.Itoa(i))
			req.Stdin = []byte(in)
			res := e.Run(t.Context(), req, nil)
			if res.ExitCode == nil || *res.ExitCode != 0 {
				t.Errorf("order %d: %+v", i, res)
				return
			}
			if got := string(res.Stdout.Content); got != in {
				t.Errorf("order %d: stdout has %d bytes, want its own %d", i, len(got), len(in))
			}
			if got, want := string(res.Stderr.Content), fmt.Sprintf("err %d\n", i); got != want {
				t.Errorf("order %d: stderr %q, want %q", i, got, want)
			}
		})
	}
	wg.Wait()
}

// TestRunLoopWaitsInThePoller: while an order runs, the pipes' loop is
// parked in the runtime's poller ("IO wait"), not blocked in epoll_wait
// on a thread of its own ("syscall"), whose processor the runtime's
// monitor takes and then polls for every 20 µs: on the worker's one
// processor that was about a fifth of its CPU per order of /bin/true
// (docs/benchmarks.md, "The worker's CPU per order, profiled").
func TestRunLoopWaitsInThePoller(t *testing.T) {
	e := New(nil)
	started := make(chan struct{})
	req := baseRequest("/bin/sleep", "30")
	req.OnStart = func(Process, bool) error { close(started); return nil }
	signals := make(chan syscall.Signal, 1)
	done := make(chan Result, 1)
	go func() { done <- e.Run(t.Context(), req, signals) }()
	<-started
	// The loop is made before OnStart is called; it may still be on its
	// way to its wait (running, runnable, or in one of the short system
	// calls before it parks). Parked, it stays so while sleep runs; the
	// blocking loop stays in its epoll_wait: look until the loop is
	// parked, or has been in a system call for longer than any short
	// one takes.
	state, inSyscall := "", time.Time{}
	for state != "IO wait" && (inSyscall.IsZero() || time.Since(inSyscall) < 10*time.Second) {
		time.Sleep(time.Millisecond)
		state = loopState()
		switch {
		case state != "syscall":
			inSyscall = time.Time{}
		case inSyscall.IsZero():
			inSyscall = time.Now()
		}
	}
	signals <- syscall.SIGKILL
	if res := <-done; !res.Canceled {
		t.Errorf("result %+v, want canceled", res)
	}
	if state != "IO wait" {
		t.Errorf("the pipes' loop waits in state %q, want \"IO wait\"", state)
	}
}

// loopState is the state of the pipes' loop's goroutine as a goroutine
// dump shows it ("IO wait", "syscall", "running", …), "" when there is
// none.
func loopState() string {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if !strings.Contains(g, "executor.(*pipes).loop(") {
			continue
		}
		header, _, _ := strings.Cut(g, "\n") // goroutine 7 [IO wait]:
		state := header[strings.IndexByte(header, '[')+1:]
		state, _, _ = strings.Cut(state, "]")
		state, _, _ = strings.Cut(state, ",") // [syscall, 2 minutes]
		return state
	}
	return ""
}
