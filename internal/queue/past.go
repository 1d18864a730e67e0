package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Acked is a message of a host's orders that its worker saw the server
// confirm an ack of, with every ack of its tenure before it: the host's
// messages up to it were all acknowledged. Stored, the time the stream
// stored it, tells it from another message at the same sequence (the
// stream deleted and made again numbers its messages from 1).
type Acked struct {
	Seq    uint64
	Stored time.Time
}

// Is reports whether a delivery at seq, stored at stored, is a.
func (a Acked) Is(seq uint64, stored time.Time) bool {
	return a.Seq != 0 && seq == a.Seq && stored.Equal(a.Stored)
}

// RewindHostConsumerPast is RewindHostConsumer, for the worker process
// that saw the server confirm the acks up to acked (zero: none): a
// consumer the server lost (a single nats-server restarted: its state is
// in memory) is created again at acked, not at the first message stored.
// A limits stream keeps acknowledged orders until PurgeAcked, and the
// consumer made again delivered every one of them; the worker acked each
// after PostgreSQL said it was finished, two statements and a round trip
// of the server each, before the first order submitted since: seconds
// after each restart, more each one (docs/decisions.md, hF24). The
// worker checks that the first delivery is acked itself (Acked.Is), and
// asks for every message (HostConsumerFromFirst) when it is not. past
// reports whether the consumer was made at acked. A consumer with nothing
// at or past acked (the stream made again, shorter; acked purged with
// nothing after it) is made again at the first message stored at once.
func (q *Queue) RewindHostConsumerPast(ctx context.Context, host string, acked Acked) (c jetstream.Consumer, past bool, err error) {
	if acked.Seq == 0 || q.nc.ConnectedClusterName() != "" {
		c, err = q.RewindHostConsumer(ctx, host)
		return c, false, err
	}
	lctx, cancel := context.WithTimeout(ctx, resetWait)
	_, err = q.js.Consumer(lctx, OrdersStream, ConsumerName(host))
	cancel()
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = q.RewindHostConsumer(ctx, host)
		return c, false, err
	}
	c, err = q.consumerFrom(ctx, host, acked.Seq)
	if err != nil || c.CachedInfo().Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy {
		return c, false, err // a work queue: from its first message
	}
	if c.CachedInfo().NumPending == 0 {
		c, err = q.HostConsumerFromFirst(ctx, host)
		return c, false, err
	}
	return c, true, nil
}

// HostConsumerFromFirst deletes the host's consumer and creates it at the
// first message stored: a consumer made past what its worker acked whose
// first delivery was not that message (RewindHostConsumerPast).
func (q *Queue) HostConsumerFromFirst(ctx context.Context, host string) (jetstream.Consumer, error) {
	if err := q.DeleteHostConsumer(ctx, host); err != nil {
		return nil, err
	}
	return q.HostConsumer(ctx, host)
}

// DeleteHostConsumer deletes the host's consumer: one made past what its
// worker acked whose first delivery was not that message, so that no
// worker takes the host over on it (RenewHostConsumer would start at its
// floor, as far past).
func (q *Queue) DeleteHostConsumer(ctx context.Context, host string) error {
	err := q.js.DeleteConsumer(ctx, OrdersStream, ConsumerName(host))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete consumer of host %s: %w", host, err)
	}
	return nil
}

// consumerFrom creates the host's consumer at stream sequence start, or
// at the first message stored on a work-queue stream, which refuses a
// start sequence (and holds nothing acknowledged).
func (q *Queue) consumerFrom(ctx context.Context, host string, start uint64) (jetstream.Consumer, error) {
	c, err := q.js.CreateOrUpdateConsumer(ctx, OrdersStream, q.hostConsumerConfig(host, start))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errWorkQueueDeliverAll {
		return q.HostConsumer(ctx, host)
	}
	if err != nil {
		return nil, fmt.Errorf("create consumer for host %s: %w", host, err)
	}
	return c, nil
}
