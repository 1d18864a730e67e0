package worker_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// slowTakeover is a Store whose first look for orders left running, in
// the takeover, waits until release is closed: a takeover that takes
// long (a slow PostgreSQL, processes slow to prove gone).
type slowTakeover struct {
	*postgres.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *slowTakeover) RunningOrders(ctx context.Context, host string) ([]*order.Order, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.RunningOrders(ctx, host)
}

// TestHostOnlineDuringALongTakeover: a worker beat only once its takeover
// was done, so the host showed offline, with no standby either, for as
// long as the takeover took, and a takeover longer than the lease lost
// the lease to the standby, which took the host over in turn. The worker
// beats from the lease on: online under its name during the takeover, and
// its lease renewed past the TTL while a standby waits.
func TestHostOnlineDuringALongTakeover(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	store := &slowTakeover{Store: e.store, entered: make(chan struct{}), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(store.release)
		}
	}()
	opts := worker.Options{Host: "lt", Instance: "lt/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second, ShutdownGrace: 5 * time.Second}
	runWorker(t, opts, store, e.q, testenv.Logger(t))
	select {
	case <-store.entered:
	case <-ctx.Done():
		t.Fatal("the takeover never looked for orders left running")
	}
	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		online, _, err := e.q.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if online["lt"].Instance == "lt/a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host is not online under the worker taking it over: %+v", online)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A standby waits; the takeover goes on for well past the lease's
	// TTL (2 s): 15 renewals at 200 ms.
	b := opts
	b.Instance = "lt/b"
	runWorker(t, b, e.store, e.q, testenv.Logger(t))
	lw, err := kv.Watch(ctx, "lease.lt", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Stop()
	for renewals := 0; renewals < 15; {
		select {
		case e := <-lw.Updates():
			if e == nil {
				continue
			}
			if string(e.Value()) != "lt/a" || e.Operation() != jetstream.KeyValuePut {
				t.Fatalf("the lease went to %q (%v) during the takeover, after %d renewals", e.Value(), e.Operation(), renewals)
			}
			renewals++
		case <-ctx.Done():
			t.Fatal("the lease was not renewed during the takeover")
		}
	}
	if e, err := kv.Get(ctx, "info.lt"); err != nil {
		t.Fatalf("no heartbeat during the takeover: %v", err)
	} else {
		var h queue.HostInfo
		if err := json.Unmarshal(e.Value(), &h); err != nil || h.Instance != "lt/a" {
			t.Fatalf("the heartbeat during the takeover: %s %v", e.Value(), err)
		}
	}
	close(store.release)
	released = true
	id := e.submit("lt", "true")
	if o := e.waitStatus(id, order.StatusSucceeded); o.Worker != "lt/a" {
		t.Fatalf("the order ran on %s, want the worker that took the host over", o.Worker)
	}
}
