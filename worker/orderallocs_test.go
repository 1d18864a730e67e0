package worker_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
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

// TestWorkerOrderAllocations counts the worker's allocations per order
// of `true` run as a synchronous submit runs it (one order at a time:
// claimed alone, its result written alone), against the real PostgreSQL,
// NATS and a real child process, exactly (a heap profile at a sampling
// rate of one), and holds them under a bound: the worker is a fifth of
// serve's CPU per sync order and had no count of its own
// (docs/benchmarks.md, "Thirty-third round: the worker's allocations
// per order, counted").
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
	per, top := testenv.AllocsUnder(40, workerFrames, one)
	t.Logf("%.1f allocations per order in the worker; the top sites:\n%s", per, strings.Join(top, "\n"))
	const most = 205
	if per > most {
		t.Errorf("%.1f allocations per order in the worker, want at most %d", per, most)
	}
}
