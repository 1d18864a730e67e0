package worker_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestResultRefusedForARequeuedOrderLeavesItsMessage: a worker's result
// is refused because the order was queued again while it ran (Requeue: a
// successor that took the host judged the worker gone and its idempotent
// order safe to run again). The order's message is then the next
// attempt's: the worker leaves it unacknowledged, and the order runs
// again. Before, the worker acknowledged it with the refusal: the message
// left the work queue, the order stayed queued and never ran again, and
// the lost-order search canceled it a minute later (TestFaultsFleet, in
// CI: "its message is gone from the ORDERLY_ORDERS stream"). Here the
// requeue is the successor's statement, written by hand, and the worker
// stays the host's owner: the message comes back to it after its ack
// wait.
func TestResultRefusedForARequeuedOrderLeavesItsMessage(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: 3 * time.Second, LeaseTTL: 2 * time.Second})
	e := &env{t: t, store: store, q: q}
	const host = "requeued"
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 3 * time.Second,
		ShutdownGrace: 5 * time.Second}, store, q, testenv.LoggerTo(io.MultiWriter(logs, t.Output())))

	gate := t.TempDir() + "/ran-once"
	id := e.submit(host, "sh", "-c", "if [ -e "+gate+" ]; then echo again; else touch "+gate+"; sleep 2; echo first; fi")
	e.waitStarted(id)
	if _, err := pool.Exec(t.Context(), `UPDATE orders SET status = 'queued', started_at = NULL, worker = '' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 30*time.Second, "the first run's result refused", func() bool {
		return strings.Contains(logs.String(), "order_id="+id.String()) && strings.Contains(logs.String(), `msg="result not recorded`)
	})
	o := e.waitStatus(id, order.StatusSucceeded)
	if o.Attempt != 2 || string(o.Result.Stdout.Content) != "again\n" {
		t.Errorf("order recorded at attempt %d with stdout %q, want attempt 2 and the second run's output", o.Attempt, o.Result.Stdout.Content)
	}
}
