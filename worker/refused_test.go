package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// finishReport is what a worker reported of one order: its "order
// finished" lines, its "result not recorded" lines, its finished events
// and the orders it counted by status.
type finishReport struct {
	finishedLines, notRecorded int
	events                     []string
	counted                    string
}

// runReported runs a worker for host on store, runs the orders submit
// makes, then a last one, and returns what the worker reported of the
// order submit returns.
func runReported(t *testing.T, e *env, host string, store worker.Store, submit func() uuid.UUID, during func(id uuid.UUID)) finishReport {
	t.Helper()
	logs := &testenv.LogBuffer{}
	m := metrics.New()
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, Metrics: m}, store, e.q, testenv.LoggerTo(io.MultiWriter(logs, t.Output())))
	// Subscribed, and the server told, before the order is submitted: an
	// event published before the subscription would go unseen, and "no
	// finished event" would hold without testing anything.
	events, err := e.q.Conn().SubscribeSync(queue.EventsSubject + host + ".*")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Unsubscribe()
	if err := e.q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	id := submit()
	during(id)
	var r finishReport
	read := func() {
		r.finishedLines, r.notRecorded = 0, 0
		for line := range strings.Lines(logs.String()) {
			if !strings.Contains(line, "order_id="+id.String()) {
				continue
			}
			if strings.Contains(line, `msg="order finished"`) {
				r.finishedLines++
			}
			if strings.Contains(line, `msg="result not recorded`) {
				r.notRecorded++
			}
		}
	}
	// The worker is done with id before the next order is queued, so
	// that it writes id's result alone, not with the next one's claim.
	testenv.WaitUntil(t, 20*time.Second, "the worker done with the order", func() bool {
		read()
		return r.finishedLines+r.notRecorded > 0
	})
	next := e.submit(host, "true")
	e.waitStatus(next, order.StatusSucceeded)
	read()
	// The worker publishes its events in order on one connection: id's,
	// if any, come before the next order's finished event, which ends the
	// reading (not a quiet spell, which a loaded machine may stretch).
	for {
		msg, err := events.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("the next order's finished event: %v", err)
		}
		var ev queue.Event
		if json.Unmarshal(msg.Data, &ev) != nil || ev.Type != "finished" {
			continue
		}
		if msg.Subject == queue.EventSubjectOf(host, next) {
			break
		}
		if msg.Subject == queue.EventSubjectOf(host, id) {
			r.events = append(r.events, ev.Status)
		}
	}
	for line := range strings.Lines(scrape(t, m)) {
		if strings.HasPrefix(line, fmt.Sprintf(`orderly_orders_finished_total{host=%q,`, host)) && !strings.HasSuffix(line, " 0\n") {
			r.counted += line
		}
	}
	return r
}

// TestRefusedResultIsNotReportedFinished: a worker whose result
// PostgreSQL refused (another worker had taken the host and interrupted
// the order: a freeze or a partition longer than the lease) logged
// "result not recorded" and then "order finished" with its own status,
// counted the order a second time in orderly_orders_finished_total
// (the successor counted it interrupted) and published a second
// finished event with a status the order does not have. Seen live after
// a SIGSTOP of a worker with a standby: "order finished status=failed
// signal=SIGKILL" for an order recorded interrupted. It reports nothing
// but the refusal.
func TestRefusedResultIsNotReportedFinished(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	e := &env{t: t, store: store, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	r := runReported(t, e, "refused", store, func() uuid.UUID { return e.submit("refused", "sleep", "1") }, func(id uuid.UUID) {
		e.waitStatus(id, order.StatusRunning)
		// What a successor's takeover leaves of the attempt.
		if _, err := pool.Exec(t.Context(), `UPDATE orders SET status = 'interrupted', finished_at = now() WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		e.waitStatus(id, order.StatusInterrupted)
	})
	if r.notRecorded != 1 || r.finishedLines != 0 || len(r.events) != 0 ||
		r.counted != `orderly_orders_finished_total{host="refused",status="succeeded"} 1`+"\n" {
		t.Fatalf("a refused result reported as finished: %d finished lines, %d refusals, finished events %v, counted:\n%s",
			r.finishedLines, r.notRecorded, r.events, r.counted)
	}
}

// lostCompleteAnswer is the real store, except that the first write of
// one order's result commits and then reports a lost connection.
type lostCompleteAnswer struct {
	worker.Store
	id   uuid.UUID
	lost atomic.Bool
}

func (s *lostCompleteAnswer) Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error {
	err := s.Store.Complete(ctx, id, attempt, f)
	if err == nil && id == s.id && s.lost.CompareAndSwap(false, true) {
		return errors.New("read tcp: connection reset by peer")
	}
	return err
}

// TestLostResultAnswerIsReportedOnce: a result whose commit's answer was
// lost is retried, and the retry finds the order no longer running. It
// is this worker's result, recorded: one "order finished", counted once,
// one finished event, and no "result not recorded" line.
func TestLostResultAnswerIsReportedOnce(t *testing.T) {
	e := newEnvAckWait(t, 30*time.Second) // its result written alone, even after a stall
	store := &lostCompleteAnswer{Store: e.store}
	r := runReported(t, e, "lostans", store, func() uuid.UUID {
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "lostans", Command: "sleep", Args: []string{"0.5"},
			Timeout: 20 * time.Second, Principal: "test", Source: "rest"}
		store.id = o.ID
		if _, err := e.store.InsertOrder(t.Context(), o); err != nil {
			t.Fatal(err)
		}
		if _, err := e.q.Publish(t.Context(), "lostans", o.ID); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}, func(id uuid.UUID) { e.waitStatus(id, order.StatusSucceeded) })
	if !store.lost.Load() {
		t.Fatal("the answer was never lost")
	}
	if r.notRecorded != 0 || r.finishedLines != 1 || len(r.events) != 1 || r.events[0] != "succeeded" ||
		r.counted != `orderly_orders_finished_total{host="lostans",status="succeeded"} 2`+"\n" {
		t.Fatalf("a result whose answer was lost: %d finished lines, %d refusals, finished events %v, counted:\n%s",
			r.finishedLines, r.notRecorded, r.events, r.counted)
	}
}
