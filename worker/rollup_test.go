package worker_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// refusedResult is the real store, except that the result of one order
// is refused as a conflict, as when a successor has interrupted it.
type refusedResult struct {
	worker.Store
	id uuid.UUID
}

func (s *refusedResult) Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error {
	if id == s.id {
		return &order.Error{Code: order.CodeConflict, Message: "the order is no longer running under this attempt"}
	}
	return s.Store.Complete(ctx, id, attempt, f)
}

// lastLive is the message count of order id's output subject in
// ORDERLY_LIVE and its last message.
func lastLive(t *testing.T, q *queue.Queue, host string, id uuid.UUID) (uint64, *jetstream.RawStreamMsg) {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	subj := queue.OutputSubjectOf(host, id)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	n := info.State.Subjects[subj]
	if n == 0 {
		return 0, nil
	}
	m, err := st.GetLastMsgForSubject(ctx, subj)
	if err != nil {
		t.Fatal(err)
	}
	return n, m
}

// TestLiveOutputRolledUpOnlyOnceStored: the worker drops an order's live
// chunks once its result is stored, and keeps them when the result was
// refused (the order's successor reads them back) and for an order that
// published no output. The worker publishes in order on one connection,
// so once a later order is rolled up, an earlier rollup would be seen.
func TestLiveOutputRolledUpOnlyOnceStored(t *testing.T) {
	e := newEnvAckWait(t, 30*time.Second) // its result written alone, even after a stall
	refused := e.submit("roll", "echo", "refused")
	store := &refusedResult{Store: e.store, id: refused}
	logs := &testenv.LogBuffer{}
	runWorker(t, worker.Options{Host: "roll", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, store, e.q, testenv.LoggerTo(io.MultiWriter(logs, t.Output())))
	// Done with before the next orders are queued, so that its result is
	// written alone (Complete), not with the next claim. A refused result
	// has no finished event: the order's row says how it ended.
	testenv.WaitUntil(t, 20*time.Second, "the refused order's result", func() bool {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "result not recorded") && strings.Contains(line, "order_id="+refused.String()) {
				return true
			}
		}
		return false
	})
	silent := e.submit("roll", "true")
	stored := e.submit("roll", "echo", "stored")
	testenv.WaitUntil(t, 20*time.Second, "the stored order rolled up", func() bool {
		n, m := lastLive(t, e.q, "roll", stored)
		return n == 1 && m.Header.Get(queue.StreamHeader) == ""
	})
	if n, m := lastLive(t, e.q, "roll", refused); n != 1 || string(m.Data) != "refused\n" || m.Header.Get(queue.StreamHeader) != "stdout" {
		t.Fatalf("the refused order's live output: %d messages, last %+v", n, m)
	}
	if n, _ := lastLive(t, e.q, "roll", silent); n != 0 {
		t.Fatalf("an order without output left %d messages on its output subject", n)
	}
}
