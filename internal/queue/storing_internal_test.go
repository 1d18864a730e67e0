package queue

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stallingPublishes is JetStream whose publishes go unanswered while
// stalled is set, on a connection that stays up: what a nats-server busy
// past publishAckWait, or a stream whose leader is elected anew, answers.
type stallingPublishes struct {
	jetstream.JetStream
	stalled *atomic.Bool
}

func (j stallingPublishes) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.stalled.Load() {
		return nil, context.DeadlineExceeded
	}
	return j.JetStream.PublishMsg(ctx, m, opts...)
}

// TestStallThatPassedClearsAtTheProbe: an order's publish goes unanswered
// on a live connection, so Storing (/readyz, orderly_dependency_up) says
// the server does not store; the stall then passes and the replica has
// nothing more to publish. ProbeStoring (the intake's, every ProbeEvery)
// sends that order again: answered, the mark clears at once; before, it
// stayed for unansweredFor (30 s) after the stall. A probe still
// unanswered changes nothing, and the order is in the stream once.
func TestStallThatPassedClearsAtTheProbe(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stalled atomic.Bool
	q, err := newQueue(ctx, nc, stallingPublishes{js, &stalled}, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
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
