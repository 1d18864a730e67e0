package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

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
type stall struct {
	suspect    atomic.Bool
	loopIdle   atomic.Bool // the consume loop waits for a message
	feederIdle atomic.Bool // the feeder waits on the iterator, holding nothing
}

// watch runs until ctx ends; it calls stop with errRewind on a stall.
// reconnects counts the connection's reconnects.
func (s *stall) watch(ctx context.Context, cons jetstream.Consumer, reconnects func() uint64, stop context.CancelCauseFunc,
	logf func(msg string, args ...any)) {
	t := time.NewTicker(stallCheckEvery)
	defer t.Stop()
	strikes, gone := 0, 0
	seen := reconnects()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := reconnects(); n != seen {
			seen = n
			s.suspect.Store(true)
		}
		if !s.suspect.Load() || !s.loopIdle.Load() || !s.feederIdle.Load() {
			strikes = 0
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, stallCheckEvery)
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
