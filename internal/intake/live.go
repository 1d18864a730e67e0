package intake

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/logging"
	"github.com/orderly-run/orderly/internal/queue"
)

// LiveSweepEvery is how often FreeLiveLeftovers looks for ended orders
// whose live messages the finished events' path did not free.
const LiveSweepEvery = time.Minute

// Bounds of freeLive: the finished events waiting for it (more are left
// to the sweep), and the ids one question to PostgreSQL carries.
const (
	liveFreeBacklog = 4096
	liveFreeBatch   = 256
)

// liveFreeRetry is how long freeLive waits after PostgreSQL or NATS
// failed it, before it takes the next events.
const liveFreeRetry = time.Second

// liveFreeEvery is the least time between two of freeLive's questions to
// PostgreSQL. An event that comes sooner after the last question waits
// for the rest of it, with those that come meanwhile: at the pace of
// synchronous orders one after another (a few milliseconds each) every
// question carried one id, a statement, a commit and a plan per order
// (an array's custom plan: its length is in the cost) beside the order's
// own five, for output a tenth of a second later freed all the same. An
// event after a quiet spell, or a whole batch, is asked about at once.
const liveFreeEvery = 100 * time.Millisecond

// freeLive frees the live messages of each order whose end this replica
// hears (queue.SubscribeFinished: told after a finished event that is not
// alone, one replica of all per order) once PostgreSQL says the order
// ended: the live stream takes no
// rollups, which any worker's seed could turn against every host, so the
// worker no longer drops its order's chunks; the API does, with a purge
// that names the order's subjects. PostgreSQL is asked because the event
// proves nothing: a worker's seed can have an answer of the server land
// on another host's event subject. Ids are asked in batches, as many as
// came meanwhile, at most one batch every liveFreeEvery. A batch that
// fails is left to the sweep (FreeLiveLeftovers). It returns when ctx
// ends.
func (s *Service) freeLive(ctx context.Context) {
	type finished struct {
		host string
		id   uuid.UUID
	}
	ch := make(chan finished, liveFreeBacklog)
	stop, err := s.pub.SubscribeFinished(func(host string, id uuid.UUID) {
		select {
		case ch <- finished{host, id}:
		default: // the sweep frees it
		}
	})
	if err != nil {
		s.logger.Warn("free the live output of finished orders: only the sweep will", "error", err,
			"every", LiveSweepEvery.String())
		return
	}
	defer stop()
	var failing logging.Streak
	batch := make([]finished, 0, liveFreeBatch)
	ids := make([]uuid.UUID, 0, liveFreeBatch)
	var asked time.Time // the last question's
	for {
		batch, ids = batch[:0], ids[:0]
		select {
		case <-ctx.Done():
			return
		case f := <-ch:
			batch = append(batch, f)
		}
		// A whole batch already waiting goes at once: pacing full
		// batches would only cap the orders freed a second (2,560),
		// and a faster fleet would overflow ch into the sweep.
		if wait := liveFreeEvery - time.Since(asked); wait > 0 && len(ch) < liveFreeBatch-1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		asked = time.Now()
	gather:
		for len(batch) < liveFreeBatch {
			select {
			case f := <-ch:
				batch = append(batch, f)
			default:
				break gather
			}
		}
		for _, f := range batch {
			ids = append(ids, f.id)
		}
		_, err := s.freeEnded(ctx, ids, func(i int) error { return s.pub.FreeLive(ctx, batch[i].host, batch[i].id) })
		if err == nil {
			if n := failing.End(); n > 0 {
				s.logger.Info("free the live output of finished orders: working again", "failures", n)
			}
			continue
		}
		if n, log := failing.Fail(); log && ctx.Err() == nil {
			s.logger.Warn("free the live output of finished orders", "error", err, "failures", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(liveFreeRetry):
		}
	}
}

// freeEnded calls free(i) for each ids[i] that PostgreSQL holds as ended
// with its whole output (or holds not at all: nothing will ever run
// under that id), and returns how many it freed. Not an interrupted
// order whose successor has yet to read its output back from the live
// stream (postgres.Store.LiveOutputKept).
func (s *Service) freeEnded(ctx context.Context, ids []uuid.UUID, free func(i int) error) (int, error) {
	kept, err := s.store.LiveOutputKept(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, id := range ids {
		if !kept[id] {
			continue // running, queued to run again, or interrupted and not yet read back: its output is still live
		}
		if err := free(i); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// FreeLiveLeftovers frees the live messages of ended orders that the
// finished events' path missed (queue.LiveLeftovers): an event no API
// replica was subscribed for (all of them down or starting), one lost,
// a backlog past liveFreeBacklog, or a purge that reached a cluster's
// stream leader before the event's store. Each replica runs it; a purge
// is idempotent. It returns how many orders it freed.
func (s *Service) FreeLiveLeftovers(ctx context.Context) (int, error) {
	left, err := s.pub.LiveLeftovers(ctx)
	if err != nil || len(left) == 0 {
		return 0, err
	}
	total := 0
	for start := 0; start < len(left); start += liveFreeBatch {
		part := left[start:min(start+liveFreeBatch, len(left))]
		ids := make([]uuid.UUID, len(part))
		for i, o := range part {
			ids[i] = o.ID
		}
		n, err := s.freeEnded(ctx, ids, func(i int) error { return s.pub.FreeLeftover(ctx, part[i]) })
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// LiveFreer is what freeing live messages needs of the queue
// (queue.Queue has it), part of Publisher.
type LiveFreer interface {
	SubscribeFinished(fn func(host string, id uuid.UUID)) (stop func(), err error)
	FreeLive(ctx context.Context, host string, id uuid.UUID) error
	LiveLeftovers(ctx context.Context) ([]queue.LiveOrder, error)
	FreeLeftover(ctx context.Context, o queue.LiveOrder) error
}
