package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Partial is the live output of an order that reached ORDERLY_LIVE: what
// an interrupted order keeps of the output its dead worker streamed.
type Partial struct {
	Stdout, Stderr                   []byte
	StdoutTruncated, StderrTruncated bool
}

// PartialOutput collects the live output chunks of order id, up to max
// bytes per stream. The live stream is kept in memory for an hour, so it
// may have less than was produced, never more.
func (q *Queue) PartialOutput(ctx context.Context, host string, id uuid.UUID, max int64) (Partial, error) {
	var p Partial
	c, err := q.js.OrderedConsumer(ctx, LiveStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{OutputSubjectOf(host, id)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return p, fmt.Errorf("read live output of order %s: %w", id, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("read live output of order %s: %w", id, err)
	}
	left := info.NumPending
	for left > 0 {
		batch, err := c.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return p, fmt.Errorf("read live output of order %s: %w", id, err)
		}
		n := uint64(0)
		for m := range batch.Messages() {
			n++
			switch m.Headers().Get(StreamHeader) {
			case "stdout":
				p.Stdout, p.StdoutTruncated = appendCapped(p.Stdout, m.Data(), max, p.StdoutTruncated)
			case "stderr":
				p.Stderr, p.StderrTruncated = appendCapped(p.Stderr, m.Data(), max, p.StderrTruncated)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return p, fmt.Errorf("read live output of order %s: %w", id, err)
		}
		if n == 0 {
			break
		}
		left -= min(n, left)
	}
	return p, nil
}

func appendCapped(dst, p []byte, max int64, truncated bool) ([]byte, bool) {
	room := max - int64(len(dst))
	if room <= 0 {
		return dst, truncated || len(p) > 0
	}
	if int64(len(p)) > room {
		return append(dst, p[:room]...), true
	}
	return append(dst, p...), truncated
}
