package queue

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// stallPublishes has q's order publishes go unanswered while stalled is
// set, on a connection that stays up: what a nats-server busy past
// publishAckWait, or a stream whose leader is elected anew, answers.
func stallPublishes(q *Queue, stalled *atomic.Bool) {
	q.sendOrder = func(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
		if stalled.Load() {
			return 0, context.DeadlineExceeded
		}
		return q.publishOrder(ctx, host, id)
	}
}

// TestStallThatPassedClearsAtTheProbe: an order's publish goes unanswered
// on a live connection, so Storing (/readyz, orderly_dependency_up) says
// the server does not store; the stall then passes and the replica has
// nothing more to publish. ProbeStoring (the intake's, every ProbeEvery)
// sends that order again: answered, the mark clears at once; before, it
// stayed for unansweredFor (30 s) after the stall. A probe still
// unanswered changes nothing, and the order is in the stream once.
func TestStallThatPassedClearsAtTheProbe(t *testing.T) {
	nc, js := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stalled atomic.Bool
	q, err := newQueue(ctx, nc, js, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stallPublishes(q, &stalled)
	if _, err := q.ProbeStoring(ctx); err != nil || q.Storing() != nil {
		t.Fatalf("a probe with nothing marked: %v, storing %v", err, q.Storing())
	}

	stalled.Store(true)
	id := uuid.New()
	if _, err := q.Publish(ctx, "h-stall", id); err == nil {
		t.Fatal("a stalled publish was answered")
	}
	if q.Storing() == nil {
		t.Fatal("an unanswered publish on a live connection left Storing ok")
	}
	// Still stalled: the probe changes nothing.
	before := q.StoringStatus()
	if _, err := q.ProbeStoring(ctx); err != nil {
		t.Fatal(err)
	}
	if after := q.StoringStatus(); after.Storing || after.Unanswered != before.Unanswered || !after.UnansweredSince.Equal(*before.UnansweredSince) {
		t.Fatalf("an unanswered probe changed the mark: %+v, was %+v", after, before)
	}

	stalled.Store(false)
	if _, err := q.ProbeStoring(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Storing(); err != nil {
		t.Fatalf("the stall passed and the probe was answered, yet: %v", err)
	}
	// The probe published the order; a republish (the reconciler's) is
	// deduplicated by its id.
	if _, err := q.Publish(ctx, "h-stall", id); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(OrdersSubject+"h-stall"))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[OrdersSubject+"h-stall"]; n != 1 {
		t.Fatalf("the order's messages in the stream: %d, want 1", n)
	}
}

// loseAcks has q's order publishes stored but their PubAcks never come
// back (a server answering past publishAckWait, an answer lost): each
// publish is counted in sent.
func loseAcks(q *Queue, sent *atomic.Int32) {
	q.sendOrder = func(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
		sent.Add(1)
		if _, err := q.publishOrder(ctx, host, id); err != nil {
			return 0, err
		}
		return 0, context.DeadlineExceeded
	}
}

// TestProbeStopsOnceTheMarkLapsed: an order's publish is stored but its
// PubAck never comes, nor does any probe's. Once the mark has lapsed
// (unansweredFor after the last unanswered publish: Storing says the bus
// stores again), ProbeStoring sends nothing more and clears the mark. It
// went on sending the same order every ProbeEvery for as long as the
// answers stayed away, and each one past the stream's duplicate window
// (2 minutes) would have stored the order a second time. The lapse is
// set back in time, not waited for.
func TestProbeStopsOnceTheMarkLapsed(t *testing.T) {
	nc, js := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var sent atomic.Int32
	q, err := newQueue(ctx, nc, js, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	loseAcks(q, &sent)
	if _, err := q.Publish(ctx, "h-lost", uuid.New()); err == nil {
		t.Fatal("a publish whose PubAck was lost was answered")
	}
	if q.Storing() == nil {
		t.Fatal("an unanswered publish on a live connection left Storing ok")
	}
	// Within the mark's life the probe sends the order again.
	if _, err := q.ProbeStoring(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sent.Load(); n != 2 {
		t.Fatalf("publishes after one probe within the mark's life: %d, want 2", n)
	}

	q.storing.mu.Lock()
	q.storing.last = time.Now().Add(-unansweredFor - time.Second)
	q.storing.mu.Unlock()
	if err := q.Storing(); err != nil {
		t.Fatalf("a lapsed mark: %v", err)
	}
	for range 3 {
		if _, err := q.ProbeStoring(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := sent.Load(); n != 2 {
		t.Fatalf("publishes after probes of a lapsed mark: %d, want still 2", n)
	}
	if q.storing.marked.Load() {
		t.Error("a lapsed mark is still set: every probe takes the slow path")
	}
}
