package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// countingStore is the real store, counting the cancel-request reads.
type countingStore struct {
	*postgres.Store
	reads atomic.Int64
}

func (s *countingStore) CancelRequestOf(ctx context.Context, id uuid.UUID) (*postgres.CancelRequest, error) {
	s.reads.Add(1)
	return s.Store.CancelRequestOf(ctx, id)
}

// TestControlFloodIsCoalesced: each forged wake-up naming the running
// order cost the worker a PostgreSQL read and a warning line; 2000 of
// them made 2000 of each. Wake-ups that come while a read is in flight
// now make one read after it (TestControlWakeUpsDuringAReadMakeOneMore
// counts them exactly), reads start at least 100ms apart, and the
// warning is logged once per 30 s. A real cancel request whose wake-up
// comes in the flood is still applied. The counts are read once the
// order is over, when no wake-up reads anything more for it: read after
// a fixed 2 s, a worker stalled meanwhile had made fewer reads (the bound
// held having seen less) or none (no warning yet).
func TestControlFloodIsCoalesced(t *testing.T) {
	e := newEnv(t)
	const host = "flood"
	store := &countingStore{Store: e.store}
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, slog.New(slog.NewJSONHandler(logs, nil)))
	id := e.submit(host, "sleep", "30")
	e.waitStatus(id, order.StatusRunning)
	const flood = 2000
	before := store.reads.Load()
	start := time.Now()
	for range flood {
		if err := e.q.SendControl(host, queue.Control{OrderID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	// A forged wake-up was read and warned of.
	testenv.WaitUntil(t, 30*time.Second, "a forged wake-up's warning", func() bool {
		return strings.Contains(logs.String(), "no cancel request is recorded")
	})
	// A real request's wake-up in a flood is not lost in it.
	if _, err := e.store.RequestCancel(t.Context(), id, "test", "SIGTERM"); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		_ = e.q.SendControl(host, queue.Control{OrderID: id})
	}
	e.waitStatus(id, order.StatusKilled)
	// The order is over: no wake-up reads anything for it any more (one
	// read may still be under way), and the counts are its flood's.
	reads := store.reads.Load() - before
	elapsed := time.Since(start)
	warnings := strings.Count(logs.String(), "no cancel request is recorded")
	t.Logf("%d forged wake-ups and 100 real ones: %d cancel-request reads (the heartbeat's included) and %d warnings in %v", flood, reads, warnings, elapsed)
	// The heartbeat reads once a beat (at most every 200ms); wake-ups at
	// most every 100ms, however long a loaded machine took.
	if limit := int64(elapsed/(100*time.Millisecond) + elapsed/(200*time.Millisecond) + 4); reads > limit {
		t.Errorf("%d forged wake-ups made %d reads in %v, want at most %d", flood, reads, elapsed, limit)
	}
	if warnings != 1 {
		t.Errorf("%d forged wake-ups logged %d warnings, want 1", flood, warnings)
	}
}
