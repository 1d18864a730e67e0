package main

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestHostConsumerOnDiskOnNATSCluster: on a single server the host's
// consumer keeps its state in memory (TestHostConsumerStateInMemory); on
// a cluster it stays on disk. There the consumer outlives its servers'
// restarts by its assignment, and one whose state was lost would number
// its deliveries from 1 again under a worker still consuming
// (docs/decisions.md, thirteenth round). The cluster runs orderly's
// accounts, and each host's worker makes its consumer from its own.
func TestHostConsumerOnDiskOnNATSCluster(t *testing.T) {
	c := startNATSClusterAccounts(t, t.TempDir(), 3, []string{"c1", "c2"})
	ctx := testenv.Context(t)
	js := c.jetStream(c.url(), "consumer-test")
	c.openQueue(js.Conn(), queue.Options{Replicas: 3})
	// Each host's worker makes its own consumer, from its account,
	// through its imports, as `orderly worker` does.
	worker := func(host string) *queue.Queue {
		nc, err := queue.Connect(c.url(), "consumer-test-"+host, seedOptions(t, c.creds.Workers[host], queue.WorkerInbox(host))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		var q *queue.Queue
		c.retry("bind as the worker of "+host, func(ctx context.Context) error {
			q, err = queue.Bind(ctx, nc, queue.Options{})
			return err
		})
		return q
	}
	for _, create := range []func() error{
		func() error { _, err := worker("c1").HostConsumer(ctx, "c1"); return err },
		func() error { _, err := worker("c2").RewindHostConsumer(ctx, "c2"); return err },
	} {
		if err := create(); err != nil {
			t.Fatal(err)
		}
	}
	// The orders stream stays a work queue there (limits retention, whose
	// acks write nothing, relies on consumers in memory: docs/decisions.md,
	// fourteenth round).
	st, err := js.Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Retention; r != jetstream.WorkQueuePolicy {
		t.Errorf("orders stream retention on the cluster %v, want a work queue", r)
	}
	for _, host := range []string{"c1", "c2"} {
		cons, err := js.Consumer(ctx, queue.OrdersStream, queue.ConsumerName(host))
		if err != nil {
			t.Fatal(err)
		}
		info := cons.CachedInfo()
		if info.Config.MemoryStorage || info.Config.Replicas > 0 && info.Config.Replicas != 3 {
			t.Errorf("consumer of %s on the cluster: memory storage %v, replicas %d; want on disk, as the stream",
				host, info.Config.MemoryStorage, info.Config.Replicas)
		}
	}
}

// TestIntakeConsumerOnDiskOnNATSCluster: the NATS intake's consumer keeps
// its state in memory on a single server (TestIntakeConsumerStateInMemory)
// and on disk on a cluster, as the host consumers do.
func TestIntakeConsumerOnDiskOnNATSCluster(t *testing.T) {
	c := startNATSClusterAccounts(t, t.TempDir(), 3, nil)
	ctx := testenv.Context(t)
	js := c.jetStream(c.url(), "intake-consumer-test")
	q := c.openQueue(js.Conn(), queue.Options{Replicas: 3})
	if _, err := q.IntakeConsumer(ctx); err != nil {
		t.Fatal(err)
	}
	// A second replica finds it as it wants it: not replaced.
	if _, err := q.IntakeConsumer(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, queue.SubmitStream, queue.IntakeConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	if info := cons.CachedInfo(); info.Config.MemoryStorage {
		t.Errorf("the intake consumer on the cluster keeps its state in memory; want on disk, as the stream")
	}
}
