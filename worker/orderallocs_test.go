package worker_test

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker"
)

// workerFrames mark an allocation as the worker's per-order work: the
// goroutine that handles orders one at a time, and the executor's own
// goroutines for an order's process. The lease, the claim mark and the
// stall check (timers of the tenure, not of an order), nats.go's and
// pgx's goroutines and the test's own are not counted.
var workerFrames = []string{
	"github.com/orderly-run/orderly/worker.(*Worker).handle",
	"github.com/orderly-run/orderly/worker/executor.",
}

// workerAllocSites sums the heap profile's allocations made under
// workerFrames, by allocation site (the innermost frame outside the
// runtime, with the innermost frame of orderly's that led to it).
func workerAllocSites() map[string]int64 {
	runtime.GC()
	runtime.GC() // the profile is published at the end of a cycle
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+100)
	}
	out := map[string]int64{}
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		var leaf, ours string
		counted := false
		for {
			f, more := frames.Next()
			if leaf == "" && !strings.HasPrefix(f.Function, "runtime.") {
				leaf = f.Function
			}
			if ours == "" && strings.HasPrefix(f.Function, "github.com/orderly-run/orderly/") {
				ours = f.Function
			}
			for _, w := range workerFrames {
				counted = counted || strings.HasPrefix(f.Function, w)
			}
			if !more {
				break
			}
		}
		if counted {
			out[strings.TrimPrefix(ours, "github.com/orderly-run/orderly/")+" | "+leaf] += r.AllocObjects
		}
	}
	return out
}

// TestWorkerOrderAllocations counts the worker's allocations per order
// of `true` run as a synchronous submit runs it (one order at a time:
// claimed alone, its result written alone), against the real PostgreSQL,
// NATS and a real child process, exactly (a heap profile at a sampling
// rate of one), and holds them under a bound: the worker is a fifth of
// serve's CPU per sync order and had no count of its own
// (docs/benchmarks.md, "The worker's allocations per order, counted").
// At 592bb735, 224; with the environment merged without a map and the
// writes' shared context (hF23), 194.
func TestWorkerOrderAllocations(t *testing.T) {
	if worker.RaceEnabled {
		t.Skip("-race: sync.Pool drops a quarter of what is put back: the counts are not the product's")
	}
	e := newEnvAckWait(t, 30*time.Second)
	// As serve runs in the bench: warnings only.
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	stop, _ := runWorker(t, worker.Options{Host: "allocs", Heartbeat: time.Second, AckWait: 30 * time.Second,
		ShutdownGrace: 5 * time.Second}, e.store, e.q, quiet)
	defer stop()
	one := func() {
		e.waitStatus(e.submit("allocs", "true"), order.StatusSucceeded)
	}
	one() // the first order makes what is made once (pools, plans)
	one()
	const n = 40
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = rate }()
	before := workerAllocSites()
	for range n {
		one()
	}
	after := workerAllocSites()
	var total int64
	type site struct {
		name string
		n    int64
	}
	var sites []site
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			total += d
			sites = append(sites, site{k, d})
		}
	}
	slices.SortFunc(sites, func(a, b site) int { return int(b.n - a.n) })
	var top []string
	for i, s := range sites {
		if i == 60 {
			break
		}
		top = append(top, fmt.Sprintf("%6.2f %s", float64(s.n)/n, s.name))
	}
	per := float64(total) / n
	t.Logf("%.1f allocations per order in the worker; the top sites:\n%s", per, strings.Join(top, "\n"))
	const most = 205
	if per > most {
		t.Errorf("%.1f allocations per order in the worker, want at most %d", per, most)
	}
}
