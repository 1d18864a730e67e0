package worker_test

import (
	"context"
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

// unansweredTouch is a Store whose TouchHost is never answered: the
// statement waits until its context ends, as one sent over a link to
// PostgreSQL that was cut without a word does.
type unansweredTouch struct {
	*postgres.Store
	once    sync.Once
	entered chan struct{}
}

func (s *unansweredTouch) TouchHost(ctx context.Context, host, version, instance string) error {
	s.once.Do(func() { close(s.entered) })
	<-ctx.Done()
	return ctx.Err()
}

// TestLeaseOutlivesAnUnansweredTouch: the holder of the lease records
// every minute in PostgreSQL that its host is alive, and did so between
// two renewals of the lease with no bound. A worker cut off from
// PostgreSQL alone (NATS reachable) stopped renewing a minute into the
// cut, and a standby took the host and interrupted the order it ran, for
// an outage the standby, on the same machine, shares. The renewals go on
// while the touch waits, and the host goes on running orders.
func TestLeaseOutlivesAnUnansweredTouch(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	store := &unansweredTouch{Store: e.store, entered: make(chan struct{})}
	opts := worker.Options{Host: "pgcut", Instance: "pgcut/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, TouchEvery: 100 * time.Millisecond}
	runWorker(t, opts, store, e.q, testenv.Logger(t))
	select {
	case <-store.entered:
	case <-ctx.Done():
		t.Fatal("the worker never recorded that its host is alive")
	}
	first := e.submit("pgcut", "true")
	if o := e.waitStatus(first, order.StatusSucceeded); o.Worker != "pgcut/a" {
		t.Fatalf("the order ran on %s, want pgcut/a", o.Worker)
	}
	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	lw, err := kv.Watch(ctx, "lease.pgcut", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Stop()
	// A standby waits; the lease must be renewed by the holder for well
	// past its TTL (2 s) while every touch goes unanswered.
	b := opts
	b.Instance = "pgcut/b"
	runWorker(t, b, e.store, e.q, testenv.Logger(t))
	for renewals := 0; renewals < 15; {
		select {
		case u := <-lw.Updates():
			if u == nil {
				continue
			}
			if string(u.Value()) != "pgcut/a" || u.Operation() != jetstream.KeyValuePut {
				t.Fatalf("the lease went to %q (%v) while the touch waited, after %d renewals", u.Value(), u.Operation(), renewals)
			}
			renewals++
		case <-ctx.Done():
			t.Fatal("the lease was not renewed while the touch waited")
		}
	}
	next := e.submit("pgcut", "true")
	if o := e.waitStatus(next, order.StatusSucceeded); o.Worker != "pgcut/a" {
		t.Fatalf("the next order ran on %s, want pgcut/a", o.Worker)
	}
}
