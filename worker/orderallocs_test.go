package worker_test

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

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

// metadataParse is the allocation site of a parse of a delivery's
// metadata: jetstream's Metadata parses the reply subject and allocates
// the metadata it returns, once per call.
const metadataParse = "github.com/nats-io/nats.go/jetstream.(*jetStreamMsg).Metadata"

// TestWorkerBacklogAllocations counts the worker's work per delivery of
// a backlog of `true`s queued before it starts (each result written with
// the next order's claim, the process record with the result), exactly,
// as TestWorkerOrderAllocations counts a sync order's, the feeder's
// goroutine included: the parses of a delivery's metadata, one (the
// feeder's gap check, the claim, the pipeline's wait for the next
// delivery and the ack's confirmation each parsed it again: 3.03 per
// delivery at 96d3416a), and the allocations per order under a bound
// (225.9 at 96d3416a, 225.3 with the parse made once).
func TestWorkerBacklogAllocations(t *testing.T) {
	if worker.RaceEnabled {
		t.Skip("-race: sync.Pool drops a quarter of what is put back: the counts are not the product's")
	}
	e := newEnvAckWait(t, 30*time.Second)
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := worker.Options{Host: "backlog", Heartbeat: time.Second, AckWait: 30 * time.Second,
		ShutdownGrace: 5 * time.Second, RecordWait: time.Minute, NextWait: time.Minute}
	// What is made once (pools, plans) by a worker of its own, stopped
	// before the backlog is queued: the next one starts on a backlog.
	stop, _ := runWorker(t, opts, e.store, e.q, quiet)
	e.waitStatus(e.submit("backlog", "true"), order.StatusSucceeded)
	e.waitStatus(e.submit("backlog", "true"), order.StatusSucceeded)
	stop()

	const n = 60
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.submit("backlog", "true")
	}
	per, sites := testenv.AllocSitesUnder(1, append(workerFrames, "github.com/orderly-run/orderly/worker.(*Worker).feed"), func() {
		stop, _ := runWorker(t, opts, e.store, e.q, quiet)
		e.waitStatus(ids[n-1], order.StatusSucceeded)
		stop()
	})
	var parses float64
	var top []string
	for i, s := range sites {
		if strings.HasSuffix(s.Name, metadataParse) {
			parses += s.PerCall
		}
		if i < 60 {
			top = append(top, fmt.Sprintf("%6.2f %s", s.PerCall/n, s.Name))
		}
	}
	per /= n
	t.Logf("%.1f allocations per order of the backlog in the worker, %.2f parses of its metadata per delivery; the top sites:\n%s",
		per, parses/n, strings.Join(top, "\n"))
	if parses != n {
		t.Errorf("%.0f parses of the metadata of %d deliveries, want one each", parses, n)
	}
	const most = 235
	if per > most {
		t.Errorf("%.1f allocations per order of the backlog in the worker, want at most %d", per, most)
	}
}
