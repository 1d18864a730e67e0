package worker

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// heldRead is the real store, counting its cancel-request reads and
// holding the first one until release is closed.
type heldRead struct {
	*postgres.Store
	reads   atomic.Int64
	in      chan struct{} // closed when the first read has come
	release chan struct{}
}

func (s *heldRead) CancelRequestOf(ctx context.Context, id uuid.UUID) (*postgres.CancelRequest, error) {
	if s.reads.Add(1) == 1 {
		close(s.in)
		<-s.release
	}
	return s.Store.CancelRequestOf(ctx, id)
}

// TestControlWakeUpsDuringAReadMakeOneMore: 2000 wake-ups naming the
// running order, all handled while the first one's cancel-request read
// is held, make one read after it, not one each, and the one warning of
// a wake-up with no request (the second read's is held back). Counted,
// not timed: the wake-ups are handed to the worker's handler directly,
// so all of them are known to have come before the read is released.
func TestControlWakeUpsDuringAReadMakeOneMore(t *testing.T) {
	store, _ := testenv.Store(t, testenv.Postgres(t))
	held := &heldRead{Store: store, in: make(chan struct{}), release: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	w := New(Options{Host: "flood"}, held, nil, nil, nil, slog.New(slog.NewJSONHandler(logs, nil)))
	id := uuid.New()
	w.current = &running{id: id, signals: make(chan syscall.Signal, 4)}
	const flood = 2000
	w.control(queue.Control{OrderID: id})
	select {
	case <-held.in:
	case <-time.After(30 * time.Second):
		t.Fatal("the first wake-up made no read")
	}
	for range flood - 1 {
		w.control(queue.Control{OrderID: id})
	}
	close(held.release)
	testenv.WaitUntil(t, 30*time.Second, "the wake-ups' reads done", func() bool {
		w.wakes.mu.Lock()
		defer w.wakes.mu.Unlock()
		return !w.wakes.busy
	})
	if n := held.reads.Load(); n != 2 {
		t.Errorf("%d wake-ups during a read made %d reads in all, want 2 (the held one and one after it)", flood, n)
	}
	if warnings := strings.Count(logs.String(), "no cancel request is recorded"); warnings != 1 {
		t.Errorf("%d wake-ups with no request logged %d warnings, want 1:\n%s", flood, warnings, logs.String())
	}
	w.wakes.mu.Lock()
	heldBack := w.wakes.held
	w.wakes.mu.Unlock()
	if heldBack != 1 {
		t.Errorf("%d warnings held back, want the second read's", heldBack)
	}
}
