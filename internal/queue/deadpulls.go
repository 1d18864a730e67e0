package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// HostPullExpiry is how long a pull request of a host's worker lasts
// (worker/worker.go): RewindHostConsumer waits out the last one of a
// stopped iterator on a cluster (waitStoppedPulls).
const HostPullExpiry = 5 * time.Second

// pullTransit is what a pull request may take from the worker to the
// consumer's leader, whose clock starts its expiry when it arrives.
const pullTransit = time.Second

// StopHostIterator is StopIterator for an iterator of the host's consumer,
// remembering when, for the next RewindHostConsumer.
func (q *Queue) StopHostIterator(it jetstream.MessagesContext) {
	StopIterator(it)
	now := time.Now()
	q.hostIterStopped.Store(&now)
}

// waitStoppedPulls waits until the pull requests of the host iterator
// stopped last (StopHostIterator) have expired on a consumer led by
// another server of a cluster. A worker in an account of its own pulls
// through its account's service import, so the leader sees the reply
// subject of orderly's account (_R_.…) and, unlike the server the
// worker is connected to, has no record of which inbox it stands for:
// the account's wildcard subscription for every reply of its imports
// (_R_.<prefix>.>) keeps it interested after the iterator unsubscribed.
// A reset then delivers what it rewinds to the dead pull first, which
// the worker's server drops, and the consumer holds it again until the
// ack wait (decisions.md, hM20). An expired pull is skipped.
func (q *Queue) waitStoppedPulls(ctx context.Context) error {
	stopped := q.hostIterStopped.Load()
	if stopped == nil || q.nc.ConnectedClusterName() == "" {
		return nil // one server follows the reply back to the inbox
	}
	wait := time.Until(stopped.Add(HostPullExpiry + pullTransit))
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
