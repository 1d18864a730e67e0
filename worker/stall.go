package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// stallCheckEvery is how often an idle worker that saw trouble on the bus
// compares the consumer's view with its own.
const stallCheckEvery = 2 * time.Second

// stall watches for acknowledgements and deliveries lost on the bus. An ack
// is fire and forget; one sent while the consumer had no leader (a NATS
// cluster electing one) or while the connection was down is lost, and so is
// a delivery in flight then: the server counts the message as still held by
// this worker and delivers it again only when its ack timer (30 s) runs out
// (with MaxAckPending reached, nothing else either). After an error from the
// message iterator (a missed heartbeat among them), an ack the server did
// not confirm, or a reconnect, the worker is "suspect"; once it is idle
// (holding no message at all), the consumer must agree that nothing is
// pending. The reconnect is watched for here because the iterator hides it
// (nats.go pulls again on its own). When the consumer disagrees twice in a
// row, the tenure ends and the next one rewinds the consumer: every
// unacked message comes back at once, in order, and the ones already done
// are recognized as finished and acked. Each tenure starts suspect
// (worker.go). A consumer that is gone without the iterator being told
// (nats-server back with its store lost, or restored from before the
// consumer existed: its pulls only miss their heartbeats) ends the tenure
// too, and the next one creates it again.
//
// A worker that is not suspect has nothing to check: the watch then parks
// until something makes it suspect (suspectNow) or the connection
// reconnects, instead of ticking every stallCheckEvery to look. The ticks
// woke every idle host's worker every 2 s for nothing (docs/benchmarks.md,
// "Eight hosts, counted").
type stall struct {
	suspect    atomic.Bool
	loopIdle   atomic.Bool // the consume loop waits for a message
	feederIdle atomic.Bool // the feeder waits on the iterator, holding nothing
	// poke wakes a parked watch once suspect is set (one pending at most).
	poke chan struct{}
	// every is the pace of the checks while suspect (stallCheckEvery
	// unless a test sets it); ticks counts them.
	every time.Duration
	ticks atomic.Uint64
}

// newStall returns a tenure's stall check, suspect from the start.
func newStall() *stall {
	s := &stall{poke: make(chan struct{}, 1), every: stallCheckEvery}
	s.suspectNow()
	return s
}

// suspectNow marks the worker suspect and wakes the watch if it is parked.
func (s *stall) suspectNow() {
	s.suspect.Store(true)
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// watch runs until ctx ends; it calls stop with errRewind on a stall.
// reconnected receives when the connection has reconnected
// (nats.Conn.StatusChanged(nats.CONNECTED)).
func (s *stall) watch(ctx context.Context, cons jetstream.Consumer, reconnected <-chan nats.Status, stop context.CancelCauseFunc,
	logf func(msg string, args ...any)) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	strikes, gone := 0, 0
	for {
		if !s.suspect.Load() {
			t.Stop()
			strikes = 0
			select {
			case <-ctx.Done():
				return
			case _, ok := <-reconnected:
				if !ok {
					reconnected = nil // closed: no more news
				}
				s.suspect.Store(true)
			case <-s.poke:
			}
			t.Reset(s.every)
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-reconnected:
			if !ok {
				reconnected = nil
			}
			s.suspect.Store(true)
			continue
		case <-t.C:
		}
		s.ticks.Add(1)
		if !s.suspect.Load() || !s.loopIdle.Load() || !s.feederIdle.Load() {
			strikes = 0
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, s.every)
		info, err := cons.Info(ictx)
		cancel()
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			if gone++; gone >= 2 {
				stop(fmt.Errorf("consume orders: %w", err))
				return
			}
			continue
		}
		gone = 0
		if err != nil {
			continue // the bus is still away: look again later
		}
		// Idle, yet the consumer counts messages as held here: their acks
		// (or the deliveries themselves) were lost.
		if info.NumAckPending == 0 || !s.loopIdle.Load() || !s.feederIdle.Load() {
			strikes = 0
			if info.NumAckPending == 0 {
				s.suspect.Store(false)
			}
			continue
		}
		if strikes++; strikes >= 2 {
			logf("the consumer counts messages as held by this idle worker; rewinding", "ack_pending", info.NumAckPending)
			stop(errRewind)
			return
		}
	}
}
