package queue_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFinishedOrderLeavesTheLiveStream: once the order is freed (the
// API's FreeLive, on its finished event) its chunks and started event go
// and the finished event expires after FinishedTTL, while a running
// order's events and chunks stay: a finished order leaves nothing in
// ORDERLY_LIVE.
func TestFinishedOrderLeavesTheLiveStream(t *testing.T) {
	q, _ := openQueue(t, queue.Options{FinishedTTL: time.Second})
	ctx := testenv.Context(t)
	done, running := uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{done, running} {
		if err := q.PublishEvent(queue.Event{OrderID: id, Type: "started", Status: "running", Host: "h1"}); err != nil {
			t.Fatal(err)
		}
	}
	publishChunks(t, q, "h1", done, 4, 1<<10)
	publishChunks(t, q, "h1", running, 4, 1<<10)
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	count := func(subj string) uint64 {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subj]
	}
	doneEv, runEv := queue.EventSubjectOf("h1", done), queue.EventSubjectOf("h1", running)
	doneOut, runOut := queue.OutputSubjectOf("h1", done), queue.OutputSubjectOf("h1", running)
	testenv.WaitUntil(t, 10*time.Second, "events and chunks in ORDERLY_LIVE", func() bool {
		return count(doneEv) == 1 && count(runEv) == 1 && count(doneOut) == 4 && count(runOut) == 4
	})

	if err := q.PublishEvent(queue.Event{OrderID: done, Type: "finished", Status: "succeeded", Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the finished event in ORDERLY_LIVE", func() bool { return count(doneEv) == 2 })
	if err := q.FreeLive(ctx, "h1", done); err != nil {
		t.Fatal(err)
	}
	if count(doneEv) != 1 || count(doneOut) != 0 {
		t.Fatalf("the freed order has %d events and %d chunks left; want its finished event alone", count(doneEv), count(doneOut))
	}
	m, err := st.GetLastMsgForSubject(ctx, doneEv)
	if err != nil || string(m.Data) == "" || m.Header.Get(jetstream.MsgTTLHeader) == "" {
		t.Fatalf("last event of the finished order: %v %v; want the finished event with a TTL", m, err)
	}
	testenv.WaitUntil(t, 15*time.Second, "the finished order gone from ORDERLY_LIVE", func() bool {
		return count(doneEv) == 0 && count(doneOut) == 0
	})
	if count(runEv) != 1 || count(runOut) != 4 {
		t.Fatalf("the running order has %d events and %d chunks left; want 1 and 4", count(runEv), count(runOut))
	}
}
