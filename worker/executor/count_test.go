package executor

import (
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
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
		// Before: 4.00 goroutines, 65 – 70 allocations.
		{"stdin and both streams", withStdin, 1.5, 58},
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
				if a := testing.AllocsPerRun(n, run); a > tt.allocs {
					t.Errorf("%.0f allocations per run, want at most %.0f", a, tt.allocs)
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
