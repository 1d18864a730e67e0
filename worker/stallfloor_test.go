package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// scriptedConsumer answers Info from a script, by the number of the call.
type scriptedConsumer struct {
	jetstream.Consumer
	calls  atomic.Int64
	script func(call int64) *jetstream.ConsumerInfo
}

func (c *scriptedConsumer) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	return c.script(c.calls.Add(1)), nil
}

// TestStallCheckRewindsOverOneStuckMessageOnly: a suspect worker busy
// with one order after another is idle only between them, and a check
// there finds the next delivery in flight (one message pending). Two such
// checks half an interval apart rewound the consumer and ended the
// tenure, though each saw another message and the ack floor had moved:
// on a loaded machine TestSecondWorkerIsStandby's holder rewound so
// between its orders and handed its lease to the standby. Two strikes
// must now be on the same oldest unacked message (the ack floor did not
// move); a message stuck there is still rewound over.
func TestStallCheckRewindsOverOneStuckMessageOnly(t *testing.T) {
	const (
		every   = 5 * time.Millisecond
		flowing = 20 // checks that each see another message in flight
	)
	s := newStall(every)
	s.loopIdle.Store(true)
	s.feederIdle.Store(true)
	cons := &scriptedConsumer{script: func(call int64) *jetstream.ConsumerInfo {
		floor := uint64(call) // one more order acked between two checks
		if call > flowing {
			floor = flowing + 1 // then one message stays unacked
		}
		return &jetstream.ConsumerInfo{NumAckPending: 1, AckFloor: jetstream.SequenceInfo{Stream: floor}}
	}}
	var stoppedAt atomic.Int64
	stopped := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.watch(ctx, cons, nil, func(err error) {
		stoppedAt.Store(cons.calls.Load())
		stopped <- err
	}, func(msg string, args ...any) { t.Log(append([]any{msg}, args...)...) })
	select {
	case err := <-stopped:
		if !errors.Is(err, errRewind) {
			t.Fatalf("the tenure ended with %v, want a rewind", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no rewind over a message stuck for %d checks", cons.calls.Load()-flowing)
	}
	if n := stoppedAt.Load(); n <= flowing+1 {
		t.Fatalf("rewound at check %d, while the ack floor moved at each of the first %d", n, flowing)
	}
}
