package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Acked is a message of a host's orders below which nothing of the host
// needs delivering again: one its worker saw the server confirm an ack
// of, with every ack of its tenure before it (the host's messages up to
// it were all acknowledged), or the one of the order PostgreSQL records
// as claimed last (every message of the host before it was delivered, in
// stream order, and settled before that claim). Stored, the time the
// stream stored it, and ID, its order's (the message's body), tell it
// from another message at the same sequence (the stream deleted and made
// again numbers its messages from 1); either may be zero when unknown.
type Acked struct {
	Seq    uint64
	Stored time.Time
	ID     uuid.UUID
}

// Is reports whether a delivery at seq, stored at stored, of the order
// id its body names (uuid.Nil: none), is a. The id is the delivery's,
// read once by whoever took the message, not parsed here again.
func (a Acked) Is(seq uint64, stored time.Time, id uuid.UUID) bool {
	if a.Seq == 0 || seq != a.Seq || !a.Stored.IsZero() && !stored.Equal(a.Stored) {
		return false
	}
	if a.ID == uuid.Nil {
		return !a.Stored.IsZero()
	}
	return id == a.ID
}

// HostConsumerLook is what one look-up of the host's consumer found
// (LookUpHostConsumer): whether the server lost it (Lost), and the ack
// floor of the one a takeover replaces (RenewHostConsumerLooked).
type HostConsumerLook struct {
	looked bool   // a single server was asked
	found  bool   // and answered with the consumer
	floor  uint64 // its ack floor, in stream sequence, when found
	lost   bool   // and answered that it has none
}

// LookUpHostConsumer looks the host's consumer up once, for both of a
// takeover's questions: the takeover asked the server twice in a row
// (whether it lost the consumer, then its ack floor before replacing
// it), each a round trip of the JetStream API, which took 0.3 – 1 s
// apiece while a whole fleet's workers took their hosts at once
// (TestFaultsFleet, docs/decisions.md, hE29). A cluster keeps its
// consumers, and nothing is looked up there; neither is anything known
// from a look-up that was not answered: the rewind or renewal after it
// asks again.
func (q *Queue) LookUpHostConsumer(ctx context.Context, host string) HostConsumerLook {
	if q.nc.ConnectedClusterName() != "" {
		return HostConsumerLook{}
	}
	lctx, cancel := context.WithTimeout(ctx, resetWait)
	defer cancel()
	c, err := q.js.Consumer(lctx, OrdersStream, ConsumerName(host))
	switch {
	case err == nil:
		return HostConsumerLook{looked: true, found: true, floor: c.CachedInfo().AckFloor.Stream}
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return HostConsumerLook{looked: true, lost: true}
	}
	return HostConsumerLook{looked: true}
}

// Lost reports whether a single nats-server lost the host's consumer:
// its state is in memory (hostConsumerConfig), so a restart loses it. A
// cluster keeps its consumers (false), and so does a look-up that was
// not answered.
func (l HostConsumerLook) Lost() bool { return l.lost }

// HostConsumerPast creates the host's consumer, which the server lost
// (HostConsumerLost), at acked (zero: none), not at the first message
// stored. A limits stream keeps acknowledged orders until PurgeAcked, and
// the consumer made at the first message delivered every one of them;
// the worker acked each after PostgreSQL said it was finished, two
// statements and a round trip of the server each, before the first order
// submitted since: seconds after each restart, more each one
// (docs/decisions.md, hF24), and as many as the stream held for a worker
// process restarted with the server (hE25).
//
// past reports whether the consumer was made at acked: the worker then
// checks that the first delivery is acked itself (Acked.Is), and asks for
// every message (HostConsumerFromFirst) when it is not. It is made at the
// first message stored instead, with nothing to check, when nothing of
// the host's is stored at or past acked (the stream made again, shorter;
// acked purged with nothing after it), and when nothing is stored below
// it: the consumer made at acked then delivers what one made at the first
// message does. The second is the common case where an API purges the
// acknowledged orders (PurgeAcked, up to the consumer's ack floor, so
// acked with them): the first delivery was the next order, the check
// failed, and the host was taken over once more (hE25). The server counts
// the host's messages from where a consumer starts (NumPending), which is
// all a worker may read of the stream: the one made at acked first, then
// the one made at the first message. Between the two, PurgeAcked removes
// only messages below acked (the floor of the first is just below it),
// and messages published are appended: the second counts as many only
// when nothing is stored below acked and nothing was published
// meanwhile. Otherwise the consumer is made at acked once more, and
// checked.
func (q *Queue) HostConsumerPast(ctx context.Context, host string, acked Acked) (c jetstream.Consumer, past bool, err error) {
	if acked.Seq == 0 {
		c, err = q.HostConsumer(ctx, host)
		return c, false, err
	}
	c, err = q.consumerFrom(ctx, host, acked.Seq)
	if err != nil || c.CachedInfo().Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy {
		return c, false, err // a work queue: from its first message
	}
	from := c.CachedInfo().NumPending
	if from == 0 {
		c, err = q.HostConsumerFromFirst(ctx, host)
		return c, false, err
	}
	if c, err = q.HostConsumerFromFirst(ctx, host); err != nil || c.CachedInfo().NumPending == from {
		return c, false, err
	}
	if err := q.DeleteHostConsumer(ctx, host); err != nil {
		return nil, false, err
	}
	c, err = q.consumerFrom(ctx, host, acked.Seq)
	return c, err == nil, err
}

// HostConsumerFromFirst deletes the host's consumer and creates it at the
// first message stored: a consumer made past what its worker acked whose
// first delivery was not that message (HostConsumerPast).
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
