package intake_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFreeLiveLeftoversFreesEndedOrdersOnly: the sweep for orders whose
// finished event the API missed frees the live output of an order that
// PostgreSQL holds ended, and of an id it does not hold (nothing will
// ever run under it), and leaves an order that may still run (queued:
// requeued, say) as it is.
func TestFreeLiveLeftoversFreesEndedOrdersOnly(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	ended, err := e.svc.Submit(e.ctx, alice, newOrder("hlive", "true"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.Cancel(e.ctx, ended.ID, "test", "canceled by the test"); err != nil || !ok {
		t.Fatalf("cancel: %v %v", ok, err)
	}
	active, err := e.svc.Submit(e.ctx, alice, newOrder("hlive", "true"))
	if err != nil {
		t.Fatal(err)
	}
	unknown := uuid.New()
	ids := []uuid.UUID{ended.ID, active.ID, unknown}
	for _, id := range ids {
		if err := e.q.PublishEvent(queue.Event{OrderID: id, Type: "started", Status: "running", Host: "hlive"}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := e.q.PublishOutput("hlive", id, "stdout", int64(i*6), []byte("chunk\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := e.q.JetStream().Stream(e.ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	count := func(subj string) uint64 {
		t.Helper()
		info, err := st.Info(e.ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subj]
	}
	chunks := func(id uuid.UUID) uint64 { return count(queue.OutputSubjectOf("hlive", id)) }
	testenv.WaitUntil(t, 10*time.Second, "the chunks in ORDERLY_LIVE", func() bool {
		return chunks(ended.ID) == 3 && chunks(active.ID) == 3 && chunks(unknown) == 3
	})

	if n, err := e.svc.FreeLiveLeftovers(e.ctx); err != nil || n != 2 {
		t.Fatalf("FreeLiveLeftovers = %d, %v; want the ended order and the unknown id freed", n, err)
	}
	if a, b, c := chunks(ended.ID), chunks(unknown), chunks(active.ID); a != 0 || b != 0 || c != 3 {
		t.Fatalf("chunks left: ended %d, unknown %d, queued %d; want 0, 0, 3", a, b, c)
	}
	// No finished event was stored: the started one goes too.
	if a, c := count(queue.EventSubjectOf("hlive", ended.ID)), count(queue.EventSubjectOf("hlive", active.ID)); a != 0 || c != 1 {
		t.Fatalf("events left: ended %d, queued %d; want 0, 1", a, c)
	}
	if n, err := e.svc.FreeLiveLeftovers(e.ctx); err != nil || n != 0 {
		t.Fatalf("FreeLiveLeftovers again = %d, %v; want nothing more", n, err)
	}
}
