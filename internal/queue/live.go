package queue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LiveStream keeps each order's live output chunks and status events for a
// while, so any API replica can replay them to an SSE client and resume
// after a reconnect. It is a memory stream: PostgreSQL holds the lasting
// record, and live output must never slow the order stream's fsyncs.
const LiveStream = "ORDERLY_LIVE"

// StreamHeader names the stream ("stdout" or "stderr") of an output chunk,
// and OffsetHeader where in that stream the chunk starts (bytes before
// it), so a follower can tell a gap or a repeat from the chunk itself:
// stream sequences start again when a memory stream is lost.
const (
	StreamHeader = "Orderly-Stream"
	OffsetHeader = "Orderly-Offset"
)

func liveConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        LiveStream,
		Description: "live output chunks and status events per order, for SSE replay",
		Subjects:    []string{OutputSubject + ">", EventsSubject + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.MemoryStorage,
		Replicas:    replicas,
		MaxAge:      time.Hour,
		MaxBytes:    256 << 20,
		Discard:     jetstream.DiscardOld,
		// EndOutput rolls up an order's chunks once its result is stored,
		// and the finished event its events (events.go); both markers
		// expire after Options.FinishedTTL.
		AllowRollup: true,
		AllowMsgTTL: true,
	}
}

// PublishOutput sends one chunk of the stdout or stderr of order id of
// host, which starts offset bytes into that stream, on the host's own
// output subject (the only one its worker may publish to). It does not
// wait for an acknowledgement: live output is best effort and the order's
// result in PostgreSQL is complete regardless.
func (q *Queue) PublishOutput(host string, id uuid.UUID, stream string, offset int64, p []byte) error {
	m := nats.NewMsg(OutputSubjectOf(host, id))
	m.Header.Set(StreamHeader, stream)
	m.Header.Set(OffsetHeader, strconv.FormatInt(offset, 10))
	m.Data = p // PublishMsg copies it into the connection's buffer before returning
	return q.nc.PublishMsg(m)
}

// EndOutput drops the live output chunks of order id of host once its
// result is committed to PostgreSQL, which then serves the whole output
// (the finished event carries it): kept for the stream's hour, a 10 MiB
// output would hold 10 MiB of the NATS server's memory for nothing. It
// publishes one empty message with "Nats-Rollup: sub" on the order's
// output subject, so the stream purges that subject's earlier messages and
// keeps only this marker, which has no StreamHeader (readers skip it) and
// expires after Options.FinishedTTL. A
// worker may publish only on its own host's subjects, so it can roll up
// only its own orders. Best effort like the chunks: a lost marker leaves
// them to MaxAge. Never for an interrupted order: the worker taking over
// reads its output back from here (PartialOutput).
func (q *Queue) EndOutput(host string, id uuid.UUID) error {
	m := nats.NewMsg(OutputSubjectOf(host, id))
	q.endsRecord(m)
	return q.nc.PublishMsg(m)
}

// Live returns an ordered consumer over the live messages of order id of
// host, starting after sequence after (0: from the beginning). Only host's
// subjects are read, so output another host's worker publishes for this
// order never reaches a follower.
func (q *Queue) Live(ctx context.Context, host string, id uuid.UUID, after uint64) (jetstream.Consumer, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{OutputSubjectOf(host, id), EventSubjectOf(host, id)},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	c, err := q.js.OrderedConsumer(ctx, LiveStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("follow order %s: %w", id, err)
	}
	return c, nil
}

// EndLive deletes a consumer Live made once its reader is done with it.
// The server would remove it only after its InactiveThreshold: every
// follower that came and went (an SSE client closing its page, a ?wait
// timing out a CLI follow) held a consumer, and on serve's embedded server
// three goroutines with it, for another minute; under a steady load of
// short-lived followers that was most of serve's goroutines. Best effort:
// the threshold still removes one whose delete is lost.
func (q *Queue) EndLive(c jetstream.Consumer) {
	info := c.CachedInfo()
	if info == nil {
		return // never created: nothing was read
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = q.js.DeleteConsumer(ctx, LiveStream, info.Name)
}
