package worker_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestRequeuedOrderLeavesItsFirstOutput: an idempotent order requeued
// after its worker died runs again under the same id, its chunks from
// offset 0 again, while the lost attempt's chunks stayed in the live
// stream (they leave it only after a stored result). A second loss
// stored the partial output of both, the second attempt's chunks placed
// over the first's: "run 1", the output of an attempt that was not the
// last. What is read back now is the last attempt's: the lost
// attempt's chunks stay in the live stream (it takes no rollups, and no
// worker may purge it), and PartialOutput reads the newest run's chunks
// alone (their Nats-Msg-Id); the successor that requeued the order
// dropped them with a rollup before.
func TestRequeuedOrderLeavesItsFirstOutput(t *testing.T) {
	e := newEnv(t)
	f := filepath.Join(t.TempDir(), "count")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "idem", Command: "sh",
		Args: []string{"-c", `echo x >> "$1"; echo "run $(wc -l < "$1")"`, "_", f}, Idempotent: true,
		Timeout: 20 * time.Second, Principal: "test", Source: "rest", CaptureStdout: true, CaptureStderr: true}
	if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Publish(t.Context(), "idem", o.ID); err != nil {
		t.Fatal(err)
	}
	crashOn := func(attempt int) func(string, *order.Order) error {
		return func(p string, got *order.Order) error {
			if p == "after_exec" && got.ID == o.ID && got.Attempt == attempt {
				return errCrash
			}
			return nil
		}
	}
	for attempt := 1; attempt <= 2; attempt++ {
		_, done := e.start("idem", crashOn(attempt))
		if err := <-done; !errors.Is(err, errCrash) {
			t.Fatalf("worker of attempt %d stopped with %v", attempt, err)
		}
	}
	e.start("idem", nil)
	e.waitStatus(o.ID, order.StatusInterrupted)
	var got *order.Order
	testenv.WaitUntil(t, 30*time.Second, "the interrupted order's partial output", func() bool {
		var err error
		if got, err = e.store.GetOrder(t.Context(), o.ID); err != nil {
			t.Fatal(err)
		}
		return got.Result != nil && len(got.Result.Stdout.Content) > 0
	})
	if got.Attempt != 2 {
		t.Fatalf("attempt %d, want 2", got.Attempt)
	}
	if got.Result == nil || string(got.Result.Stdout.Content) != "run 2\n" {
		t.Errorf("the partial output of the second attempt: %+v, want stdout \"run 2\\n\"", got.Result)
	}
}
