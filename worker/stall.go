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

// stallCheckEvery is how often, by default, an idle worker that saw trouble
// on the bus compares the consumer's view with its own
// (Options.StallCheckEvery).
const stallCheckEvery = 2 * time.Second

// idleCheckEvery is how often, by default, an idle worker on a NATS
// cluster that saw no trouble checks its consumer anyway
// (Options.IdleCheckEvery).
const idleCheckEvery = 4 * time.Second

// goneRecheck is how soon a consumer found missing is asked again before
// the tenure ends over it.
const goneRecheck = 250 * time.Millisecond

// stall watches for acknowledgements and deliveries lost on the bus. An ack
// is fire and forget; one sent while the consumer had no leader (a NATS
// cluster electing one) or while the connection was down is lost, and so is
// a delivery in flight then: the server counts the message as still held by
// this worker and delivers it again only when its ack timer (30 s) runs out
// (with MaxAckPending reached, nothing else either). After an error from the
// message iterator (a missed heartbeat among them), an ack the server did
// not confirm, or a reconnect, the worker is "suspect"; once it is idle
// (holding no message at all, and no ack of its own waiting for the
// server's confirmation), the consumer must agree that nothing is
// pending. The reconnect is watched for here because the iterator hides it
// (nats.go pulls again on its own). A reconnect, or suspicion while the
// worker is idle, has the check run at once, not at the next tick: a
// nats-server restarted with its store kept has lost the host's consumer
// (its state is in memory), and the host's next order waited two ticks
// (4 s) for the tenure to end and create it again. When the consumer
// disagrees twice in a row, the tenure ends and the next one rewinds the
// consumer: every unacked message comes back at once, in order, and the
// ones already done are recognized as finished and acked. Each tenure
// starts suspect (worker.go). A consumer that is gone without the
// iterator being told (nats-server back with its store lost, or restored
// from before the consumer existed: its pulls only miss their heartbeats)
// ends the tenure too, and the next one creates it again.
//
// A worker that is not suspect has nothing to check: the watch then parks
// until something makes it suspect (suspectNow) or the connection
// reconnects, instead of ticking every interval to look. The ticks woke
// every idle host's worker every 2 s for nothing (docs/benchmarks.md,
// "Eight hosts, counted"). On a NATS cluster it parks for recheck at most,
// then looks again as if suspect: there the consumer may take a pull
// request this worker sees nothing of and cannot tell dead, such as the
// ones a frozen server read, once thawed, from the socket of a connection
// the worker had left it by (its own iterator's, before it reconnected
// elsewhere; decisions.md, hB22). Through an account's service import the
// consumer's leader keeps such a pull until it expires and hands it the
// next order, which the worker never gets, and nothing the worker sees
// says so: the host waited for the ack timer (31 s, CI).
type stall struct {
	suspect    atomic.Bool
	loopIdle   atomic.Bool // the consume loop waits for a message
	feederIdle atomic.Bool // the feeder waits on the iterator, holding nothing
	// acking counts the tenure's acks sent and not yet confirmed (acks):
	// the server may count such an ack's message as pending until it has
	// taken the ack, so the check waits for them (an idle check raced the
	// order's ack and rewound under a steady stream of orders).
	acking atomic.Int64
	// wake has the watch check now, not at the next tick, and wakes it
	// if it is parked (one pending at most).
	wake chan struct{}
	// every is the pace of the checks while suspect (Options.
	// StallCheckEvery, stallCheckEvery by default); ticks counts them.
	every time.Duration
	ticks atomic.Uint64
	// recheck is how long the watch parks at most (0: until woken);
	// the worker sets it on a NATS cluster (Options.IdleCheckEvery).
	recheck time.Duration
}

// newStall returns a tenure's stall check, suspect from the start, that
// checks every interval while suspect.
func newStall(every time.Duration) *stall {
	s := &stall{wake: make(chan struct{}, 1), every: every}
	s.suspectNow()
	return s
}

// suspectNow marks the consumer suspect and has it checked at once.
func (s *stall) suspectNow() {
	s.suspect.Store(true)
	s.poke()
}

// poke has the check run now (or wakes the parked watch); it never blocks.
func (s *stall) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// idle reports whether the worker holds no message and waits for no ack's
// confirmation: only then is a message the consumer counts as pending one
// it lost.
func (s *stall) idle() bool {
	return s.loopIdle.Load() && s.feederIdle.Load() && s.acking.Load() == 0
}

// watch runs until ctx ends; it calls stop with errRewind on a stall.
// reconnected receives the connection's reconnects
// (nats.Conn.StatusChanged(nats.CONNECTED)).
func (s *stall) watch(ctx context.Context, cons jetstream.Consumer, reconnected <-chan nats.Status, stop context.CancelCauseFunc,
	logf func(msg string, args ...any)) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	again := time.NewTimer(time.Hour) // set going only when parked
	again.Stop()
	defer again.Stop()
	strikes, gone := 0, 0
	var (
		struck time.Time // the first strike's
		floor  uint64    // the ack floor the first strike saw
		// unprompted: the watch left its park for a recheck, not for
		// trouble; the rewind's line says so.
		unprompted bool
	)
	for {
		switch {
		case !s.suspect.Load():
			// Nothing to check: park until a reconnect or a suspicion,
			// then check at once.
			t.Stop()
			strikes, gone = 0, 0
			var recheck <-chan time.Time // nil, off a cluster: never
			if s.recheck > 0 {
				again.Reset(s.recheck)
				recheck = again.C
			}
			select {
			case <-ctx.Done():
				return
			case _, ok := <-reconnected:
				if !ok {
					reconnected = nil // closed: no more news
				}
				s.suspect.Store(true)
				unprompted = false
			case <-s.wake:
				unprompted = false
			case <-recheck:
				s.suspect.Store(true)
				unprompted = true
			}
			again.Stop()
			t.Reset(s.every)
		case gone > 0:
			// Confirm a missing consumer soon: it is asked again, not a
			// tick later, before the tenure ends over it.
			select {
			case <-ctx.Done():
				return
			case <-time.After(goneRecheck):
			}
		default:
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-s.wake:
			case _, ok := <-reconnected:
				if !ok {
					reconnected = nil
				}
				s.suspect.Store(true)
				unprompted = false
			}
		}
		s.ticks.Add(1)
		if !s.suspect.Load() || !s.idle() {
			strikes, gone = 0, 0
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
		if info.NumAckPending == 0 || !s.idle() {
			strikes = 0
			if info.NumAckPending == 0 {
				s.suspect.Store(false)
			}
			continue
		}
		// Two strikes at least half an interval apart, with the ack floor
		// where it was: a check run at once (a poke) must not rewind over
		// a delivery still in flight, nor two checks over two: a worker
		// busy with one order after another is idle only between them,
		// where a check may find the next delivery in flight, and an ack
		// floor that moved says the message pending at the first strike
		// was acked since. A lost ack or delivery holds the floor below it.
		if strikes > 0 && info.AckFloor.Stream != floor {
			strikes = 0
		}
		if strikes == 0 {
			struck, floor = time.Now(), info.AckFloor.Stream
		}
		if strikes++; strikes >= 2 && time.Since(struck) >= s.every/2 {
			logf("the consumer counts messages as held by this idle worker; rewinding", "ack_pending", info.NumAckPending,
				"unprompted", unprompted)
			stop(errRewind)
			return
		}
	}
}
