package worker_test

import (
	"context"
	"errors"
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

// markedElsewhere is a Store whose first interrupt finds the attempt
// marked interrupted with no output by another write (as an admin's
// `hosts --forget --abandon` marks it) and loses its own answer.
type markedElsewhere struct {
	*postgres.Store
	done atomic.Bool
}

func (s *markedElsewhere) InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *postgres.PartialOutput) (bool, error) {
	if !s.done.CompareAndSwap(false, true) {
		return s.Store.InterruptAttempt(ctx, id, attempt, actor, reason, out)
	}
	if ok, err := s.Store.InterruptAttempt(ctx, id, attempt, actor, "interrupted: abandoned by an admin", nil); err != nil || !ok {
		return ok, err
	}
	return false, errors.New("unexpected EOF")
}

// TestMarkFoundDoneElsewhereStillStoresTheOutput: a successor read the
// dead worker's output and sent it with its mark, whose answer was lost;
// meanwhile the attempt had been marked interrupted with none. The
// retry took the interrupted row for its own mark, which it believed
// stored the output, and the evidence skipped its read: the order kept
// no output though the live stream held it. Whether the mark stored it
// is unknown there, and the evidence stores it where the row holds none.
func TestMarkFoundDoneElsewhereStillStoresTheOutput(t *testing.T) {
	e := newEnv(t)
	const host, line = "markelsewhere", "printed before the loss\n"
	o := startedWithOutput(t, e, host, line)

	store := &markedElsewhere{Store: e.store}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, testenv.Logger(t))
	e.waitStatus(o.ID, order.StatusInterrupted)
	testenv.WaitUntil(t, 20*time.Second, "the attempt's reaped event", func() bool {
		return len(reapedEvents(t, e, o.ID)) == 1
	})
	if !store.done.Load() {
		t.Fatal("no mark was made elsewhere: nothing was tested")
	}
	got, err := e.store.GetOrder(t.Context(), o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result == nil || string(got.Result.Stdout.Content) != line {
		t.Fatalf("the interrupted order holds result %+v, want the live stream's stdout %q", got.Result, line)
	}
}

// startedWithOutput is an order of host that captures stdout, started
// by a worker that died (startedBy, with a leftover process), whose line
// its worker published to the live stream as its attempt 1.
func startedWithOutput(t *testing.T, e *env, host, line string) *order.Order {
	t.Helper()
	proc, _ := leftover(t)
	o := startedBy(t, e, host, host+"/dead", false, proc)
	if _, err := e.pool.Exec(t.Context(), `UPDATE orders SET capture_stdout = true WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	live := queue.LiveOutput{Attempt: 1}
	if err := live.Publish(e.q, heldOutput(line), host, o.ID, "stdout", 0, []byte(line)); err != nil {
		t.Fatal(err)
	}
	live.Stop()
	return o
}

// heldOutput is a LiveSource holding one stdout line from offset 0.
type heldOutput string

func (h heldOutput) ReadOutput(stream string, off int64, p []byte) (int64, int) {
	if stream != "stdout" || off >= int64(len(h)) {
		return off, 0
	}
	return off, copy(p, h[off:])
}
