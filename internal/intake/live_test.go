package intake_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/postgres"
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

// TestLiveOutputOfAnInterruptedOrderKeptUntilItsSuccessorReadsIt: a
// successor marks a dead worker's order interrupted, reaps what is left
// of it (seconds, for a process group that takes its time to die), and
// only then reads the output the dead worker published back from the
// live stream (queue.PartialOutput) and records it with the evidence.
// Interrupted is terminal, so the sweep (and a finished event) freed that
// output in between, and the order was recorded with none, where the
// worker's own rollup had never freed an interrupted order's. It is
// freed once the evidence is recorded.
func TestLiveOutputOfAnInterruptedOrderKeptUntilItsSuccessorReadsIt(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	const host = "hlive2"
	o, err := e.svc.Submit(e.ctx, alice, newOrder(host, "true"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.TakeHost(e.ctx, host, "test", postgres.Owner{Instance: "w1"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := e.store.Claim(e.ctx, o.ID, "w1", 1); err != nil || !claimed {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	for i := range 3 {
		if err := e.q.PublishOutput(host, o.ID, "stdout", int64(i*6), []byte("chunk\n")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitUntil(t, 10*time.Second, "the chunks in ORDERLY_LIVE", func() bool {
		p, err := e.q.PartialOutput(e.ctx, host, o.ID, 1<<20, 0)
		return err == nil && string(p.Stdout) == "chunk\nchunk\nchunk\n"
	})
	// w1 died; w2 takes the host and marks the order, not yet reaped.
	if _, _, err := e.store.TakeHost(e.ctx, host, "test", postgres.Owner{Instance: "w2"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.store.InterruptAttempt(e.ctx, o.ID, 1, "w2", "test", nil); err != nil || !ok {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	if n, err := e.svc.FreeLiveLeftovers(e.ctx); err != nil || n != 0 {
		t.Errorf("FreeLiveLeftovers between the mark and the reap = %d, %v; want nothing freed", n, err)
	}
	p, err := e.q.PartialOutput(e.ctx, host, o.ID, 1<<20, 0)
	if err != nil || string(p.Stdout) != "chunk\nchunk\nchunk\n" {
		t.Fatalf("the successor's read of the partial output: %q, %v; want the three chunks", p.Stdout, err)
	}
	if err := e.store.RecordEvidence(e.ctx, o.ID, 1, "w2", postgres.Evidence{Reap: map[string]any{"found": false},
		Output: &postgres.PartialOutput{Stdout: p.Stdout}}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.svc.FreeLiveLeftovers(e.ctx); err != nil || n != 1 {
		t.Errorf("FreeLiveLeftovers once the evidence is recorded = %d, %v; want the order freed", n, err)
	}
}

// endedAsked is the store, counting the questions LiveOutputKept (which
// orders' live output PostgreSQL holds all of, to be freed) is asked that
// name any of of.
type endedAsked struct {
	intake.Store
	of    map[uuid.UUID]bool
	asked atomic.Int32
}

func (s *endedAsked) LiveOutputKept(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	if slices.ContainsFunc(ids, func(id uuid.UUID) bool { return s.of[id] }) {
		s.asked.Add(1)
	}
	return s.Store.LiveOutputKept(ctx, ids)
}

// TestFreeLiveAsksAboutFinishedOrdersTogether: finished events that come
// a few milliseconds apart, as synchronous orders one after another
// send them, are asked about in a few questions to PostgreSQL, not one
// each (a statement, a commit and a plan per order), and every one of
// those orders is freed all the same.
func TestFreeLiveAsksAboutFinishedOrdersTogether(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	const n = 20
	ids := make([]uuid.UUID, n+1) // ids[n]: the probe
	of := map[uuid.UUID]bool{}
	for i := range ids {
		ids[i] = uuid.New() // no order: PostgreSQL holds them ended
		if i < n {
			of[ids[i]] = true
		}
		if err := e.q.PublishOutput("hlive", ids[i], "stdout", 0, []byte("chunk\n")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.q.JetStream().Stream(e.ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	chunks := func() map[string]uint64 {
		t.Helper()
		info, err := st.Info(e.ctx, jetstream.WithSubjectFilter(queue.OutputSubject+"hlive.>"))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	testenv.WaitUntil(t, 10*time.Second, "the chunks in ORDERLY_LIVE", func() bool { return len(chunks()) == n+1 })

	store := &endedAsked{Store: e.store, of: of}
	// The sweep would free them too: not within the test.
	svc := intake.New(store, e.pub, e.policy, intake.Options{LiveSweepEvery: 24 * time.Hour}, testenv.Logger(t))
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	finish := func(id uuid.UUID) {
		t.Helper()
		if err := e.q.PublishEvent(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "hlive"}); err != nil {
			t.Fatal(err)
		}
	}
	// The probe's finished event, until it is freed: the service
	// listens.
	testenv.WaitUntil(t, 10*time.Second, "the probe's output freed", func() bool {
		finish(ids[n])
		_, left := chunks()[queue.OutputSubjectOf("hlive", ids[n])]
		return !left
	})
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for _, id := range ids[:n] {
		<-tick.C
		finish(id)
	}
	testenv.WaitUntil(t, 10*time.Second, "every finished order's output freed", func() bool { return len(chunks()) == 0 })
	// The first perhaps alone, the others after it together; a third
	// for a machine that stalled between them.
	if asked := store.asked.Load(); asked > 3 {
		t.Errorf("PostgreSQL was asked %d times about %d orders finished 2 ms apart, want at most 3", asked, n)
	}
}
