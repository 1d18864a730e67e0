package worker_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestNATSRestartDeliversAgainOnlyWhatWasNotAcked: the orders stream has
// limits retention, so the orders acknowledged before a nats-server
// restart are still stored, and the restart loses the host's in-memory
// consumer. The worker makes it again past the orders whose acks the
// server confirmed to it, not at the first message stored: the order
// submitted after the restart is the second delivery of the new
// consumer (the first is the order acked last, which tells the worker it
// is the stream it acked), not the eleventh after ten finished orders
// delivered again, each acked only after PostgreSQL said it was finished
// (docs/decisions.md, hF24). Every order runs once, in order.
func TestNATSRestartDeliversAgainOnlyWhatWasNotAcked(t *testing.T) {
	const host = "prestart"
	ns := testenv.NATSServer(t, &server.Options{})
	e, connected, log, appendName, ids := tenAcked(t, ns, host, "")

	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 30*time.Second, "both clients reconnect", func() bool {
		return connected()
	})
	ids = append(ids, appendName("new"))

	want := ""
	var prev *order.Order
	for i, id := range ids {
		o := e.waitStatus(id, order.StatusSucceeded)
		if o.Attempt != 1 {
			t.Errorf("order %s ran in attempt %d", id, o.Attempt)
		}
		if prev != nil && o.StreamSeq <= prev.StreamSeq {
			t.Fatalf("order %s (seq %d) ran after %s (seq %d)", o.ID, o.StreamSeq, prev.ID, prev.StreamSeq)
		}
		prev = o
		if i < 10 {
			want += strconv.Itoa(i) + "\n"
		}
	}
	if b, _ := os.ReadFile(log); string(b) != want+"new\n" {
		t.Fatalf("the orders ran %q, want each once, in order", b)
	}
	var info *jetstream.ConsumerInfo
	if err := testenv.Answered(t, "the host consumer's info", func(ctx context.Context) error {
		c, err := e.q.JetStream().Consumer(ctx, queue.OrdersStream, queue.ConsumerName(host))
		if err == nil {
			info = c.CachedInfo()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != 2 || info.Delivered.Stream != prev.StreamSeq {
		t.Fatalf("the consumer made again after the restart delivered %d messages, up to stream sequence %d; "+
			"want 2: the order acked last, then the new one (%d), not the finished orders again before it",
			info.Delivered.Consumer, info.Delivered.Stream, prev.StreamSeq)
	}
}

// TestNATSRestartAfterAPurgeTakesTheHostOnce: where an API purges the
// acknowledged orders (queue.PurgeAcked, up to the consumer's ack floor),
// the order the worker acked last is gone by the time a nats-server
// restart loses the consumer. Here the restart comes while an eleventh
// order runs, the twelfth held behind it (MaxAckPending 2) and a
// thirteenth stored, the ten before purged. The consumer made again past
// the order acked last would deliver the eleventh first; nothing of the
// host's is stored below it, so that is
// the very consumer one made at the first message stored is, and the
// worker consumes it: one takeover after the restart, not a tenure ended
// because the order acked last was not delivered first, then another
// (docs/decisions.md, hE25). Each order runs once, in order.
func TestNATSRestartAfterAPurgeTakesTheHostOnce(t *testing.T) {
	const host = "purged"
	ns := testenv.NATSServer(t, &server.Options{})
	var logs testenv.LogBuffer
	e, connected, log, appendName, _, _ := tenAckedLogged(t, ns, host, "", testenv.LoggerTo(io.MultiWriter(&logs, t.Output())))
	gate := filepath.Join(t.TempDir(), "gate")
	e.waitStarted(e.submit(host, "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.05; done; echo held >> "$2"`, "_", gate, log))
	appendName("twelve")
	fresh := appendName("thirteen")
	if n, err := e.q.PurgeAcked(t.Context()); err != nil || n != 1 {
		t.Fatalf("purged the orders of %d hosts (%v), want 1", n, err)
	}
	before := logs.String()
	restarted := time.Now()
	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 30*time.Second, "both clients reconnect", func() bool {
		return connected()
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := e.waitStatus(fresh, order.StatusSucceeded)
	after := strings.TrimPrefix(logs.String(), before)
	t.Logf("the thirteenth order started %s after the restart; %d takeovers since",
		o.StartedAt.Sub(restarted).Round(time.Millisecond), strings.Count(after, "took the host over"))
	if strings.Contains(after, "delivered another message first") {
		t.Errorf("the worker ended a tenure because the order it acked last, purged, was not delivered first:\n%s", after)
	}
	if b, _ := os.ReadFile(log); string(b) != "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\nheld\ntwelve\nthirteen\n" {
		t.Fatalf("the orders ran %q, want the last three once, after the ten", b)
	}
}

// TestWorkerOnAStreamMadeAgainDeliversItsFirstOrders: the orders stream is
// deleted and made again under a worker that acked ten orders of it, and
// twelve orders are submitted to the new one, numbered from 1 again. The
// worker's consumer, made again past the order it acked last (sequence
// 10), finds another message there, or none: it starts at the first
// message stored instead, and every order of the new stream runs, once,
// in order; none below sequence 10 is skipped.
func TestWorkerOnAStreamMadeAgainDeliversItsFirstOrders(t *testing.T) {
	const host = "remade"
	e, _, log, appendName, _ := tenAcked(t, testenv.NATSServer(t, &server.Options{}), host, "old")
	ranOnceAfterTheOld(t, e, log, twelveOnAStreamMadeAgain(t, e, appendName))
}

// TestWorkerStartedOnAStreamMadeAgainDeliversItsFirstOrders: as
// TestWorkerOnAStreamMadeAgainDeliversItsFirstOrders, with the worker that
// acked the ten stopped before the stream is made again and another
// process's worker started after the twelve are submitted. The new
// process has no record of the acks: its consumer is made again past the
// order PostgreSQL records as claimed last (old9, sequence 10), whose
// stored time nobody knows. At sequence 10 the new stream holds new9:
// only the order id tells it from old9 (queue.Acked.Is), and taken for
// old9 the nine new orders below it were never delivered.
func TestWorkerStartedOnAStreamMadeAgainDeliversItsFirstOrders(t *testing.T) {
	const host = "remadestarted"
	ns := testenv.NATSServer(t, &server.Options{})
	e, _, log, appendName, _, stop := tenAckedLogged(t, ns, host, "old", testenv.Logger(t))
	stop()
	fresh := twelveOnAStreamMadeAgain(t, e, appendName)
	wq, _ := workerQueueOn(t, ns)
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
		ShutdownGrace: 5 * time.Second}, e.store, wq, testenv.Logger(t))
	ranOnceAfterTheOld(t, e, log, fresh)
}

// twelveOnAStreamMadeAgain deletes the orders stream, makes it again and
// submits twelve orders to it with appendName, numbered from 1 again.
func twelveOnAStreamMadeAgain(t *testing.T, e *env, appendName func(string) uuid.UUID) (fresh []uuid.UUID) {
	t.Helper()
	if err := e.q.JetStream().DeleteStream(t.Context(), queue.OrdersStream); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.New(t.Context(), e.q.Conn(), queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		fresh = append(fresh, appendName("new"+strconv.Itoa(i)))
	}
	return fresh
}

// ranOnceAfterTheOld waits until the orders fresh of
// twelveOnAStreamMadeAgain succeeded, and checks that each ran once, in
// order, after old9 and none before it.
func ranOnceAfterTheOld(t *testing.T, e *env, log string, fresh []uuid.UUID) {
	t.Helper()
	want := ""
	for i, id := range fresh {
		if o := e.waitStatus(id, order.StatusSucceeded); o.Attempt != 1 {
			t.Errorf("order %s ran in attempt %d", id, o.Attempt)
		}
		want += "new" + strconv.Itoa(i) + "\n"
	}
	b, _ := os.ReadFile(log)
	if _, after, ok := strings.Cut(string(b), "old9\n"); !ok || after != want {
		t.Fatalf("the orders ran %q, want the new stream's after the old, each once, in order", b)
	}
}

// tenAcked starts a worker of host on ns with ten orders that append
// prefix and their number to log, and waits until they ran and the
// server has their acks; appendName submits another.
func tenAcked(t *testing.T, ns *server.Server, host, prefix string) (e *env, connected func() bool, log string, appendName func(string) uuid.UUID, ids []uuid.UUID) {
	t.Helper()
	e, connected, log, appendName, ids, _ = tenAckedLogged(t, ns, host, prefix, testenv.Logger(t))
	return e, connected, log, appendName, ids
}

// tenAckedLogged is tenAcked with the worker logging to logger; stop
// stops that worker.
func tenAckedLogged(t *testing.T, ns *server.Server, host, prefix string, logger *slog.Logger) (e *env, connected func() bool, log string, appendName func(string) uuid.UUID, ids []uuid.UUID, stop func()) {
	t.Helper()
	e, wq, connected := newEnvOn(t, ns)
	log = filepath.Join(t.TempDir(), "ran")
	appendName = func(name string) uuid.UUID {
		return e.submit(host, "sh", "-c", `echo "$1" >> "$2"`, "_", name, log)
	}
	for i := range 10 {
		ids = append(ids, appendName(prefix+strconv.Itoa(i)))
	}
	stop, _ = runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
		ShutdownGrace: 5 * time.Second}, e.store, wq, logger)
	for _, id := range ids {
		e.waitStatus(id, order.StatusSucceeded)
	}
	testenv.WaitUntil(t, 30*time.Second, "the acks of the ten orders", func() bool {
		c, err := e.q.JetStream().Consumer(t.Context(), queue.OrdersStream, queue.ConsumerName(host))
		return err == nil && c.CachedInfo().NumAckPending == 0 && c.CachedInfo().NumPending == 0
	})
	return e, connected, log, appendName, ids, stop
}
