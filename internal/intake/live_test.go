package intake_test

import (
	"context"
	"slices"
	"sync"
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

// endedCounter is the real store, with the id lists of its Ended calls
// kept for the test to count.
type endedCounter struct {
	intake.Store
	mu    sync.Mutex
	calls [][]uuid.UUID
}

func (c *endedCounter) Ended(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]bool, []uuid.UUID, error) {
	c.mu.Lock()
	c.calls = append(c.calls, slices.Clone(ids))
	c.mu.Unlock()
	return c.Store.Ended(ctx, ids)
}

// callsWith is how many Ended calls asked about any of ids.
func (c *endedCounter) callsWith(ids []uuid.UUID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		if slices.ContainsFunc(call, func(id uuid.UUID) bool { return slices.Contains(ids, id) }) {
			n++
		}
	}
	return n
}

// TestFreeLiveAsksOnceForTheFinishedEventsOfAWindow: finished events
// that come one at a time, a few milliseconds apart (sequential sync
// orders), are gathered for Options.LiveFreeGather and their orders
// asked about in one question to PostgreSQL, then each freed (its chunk
// and started event gone, its finished event kept). Before, each event
// was asked about alone as it came: a statement and a round trip per
// order (docs/benchmarks.md, "Serve's work per sync order since the
// twenty-eighth round, counted").
func TestFreeLiveAsksOnceForTheFinishedEventsOfAWindow(t *testing.T) {
	opts := intake.Options{LiveSweepEvery: time.Hour, DropEvery: time.Hour, LiveFreeGather: time.Second}
	e := newIntakeEnv(t, opts)
	counter := &endedCounter{Store: e.store}
	svc := intake.New(counter, e.pub, e.policy, opts, testenv.Logger(t))
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })

	st, err := e.q.JetStream().Stream(e.ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	held := func(id uuid.UUID) (chunks, events uint64) {
		t.Helper()
		info, err := st.Info(e.ctx, jetstream.WithSubjectFilter("orderly.*.hlive."+id.String()))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[queue.OutputSubjectOf("hlive", id)], info.State.Subjects[queue.EventSubjectOf("hlive", id)]
	}
	ended := func() uuid.UUID {
		t.Helper()
		o, err := e.svc.Submit(e.ctx, alice, newOrder("hlive", "true"))
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := e.store.Cancel(e.ctx, o.ID, "test", "canceled by the test"); err != nil || !ok {
			t.Fatalf("cancel: %v %v", ok, err)
		}
		if err := e.q.PublishEvent(queue.Event{OrderID: o.ID, Type: "started", Status: "running", Host: "hlive"}); err != nil {
			t.Fatal(err)
		}
		if err := e.q.PublishOutput("hlive", o.ID, "stdout", 0, []byte("chunk\n")); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	finish := func(id uuid.UUID) {
		t.Helper()
		if err := e.q.PublishEvent(queue.Event{OrderID: id, Type: "finished", Status: "canceled", Host: "hlive"}); err != nil {
			t.Fatal(err)
		}
	}
	freed := func(id uuid.UUID) bool { c, ev := held(id); return c == 0 && ev == 1 }

	// The subscription is made as Run starts: a first order's finished
	// event, sent again until it is freed, says it is there.
	first := ended()
	testenv.WaitUntil(t, 30*time.Second, "the first order freed", func() bool {
		finish(first)
		return freed(first)
	})

	const n = 8
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = ended()
	}
	for _, id := range ids {
		finish(id)
		time.Sleep(20 * time.Millisecond) // one at a time, as sequential orders end (a pace, not a wait for something)
	}
	testenv.WaitUntil(t, 30*time.Second, "every order freed", func() bool {
		for _, id := range ids {
			if !freed(id) {
				return false
			}
		}
		return true
	})
	if calls := counter.callsWith(ids); calls > 2 {
		t.Errorf("PostgreSQL asked %d times about the %d orders whose finished events came within %s; want once (twice if a window closed between them)",
			calls, n, opts.LiveFreeGather)
	}
}
