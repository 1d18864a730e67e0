package worker

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestAckConfirmationPokesOnlyAnIdleCheck: the confirmation of a tenure's
// last ack in flight has the stall check run at once only when the worker
// is otherwise idle, as TestStallCheckWaitsForAnAckInFlight needs. While
// the worker is busy (its loop holds an order, or the feeder a delivery)
// the check would find it so and do nothing: each confirmation woke the
// watch for that, once per order of a backlog drained from a tenure's
// start, which is suspect until its first idle check (docs/benchmarks.md,
// "The worker's per-order path, counted (hC10)"). The loop pokes the
// check itself when it is idle again.
func TestAckConfirmationPokesOnlyAnIdleCheck(t *testing.T) {
	for _, tt := range []struct {
		name             string
		loopIdle, feeder bool
		poked            bool
	}{
		{"loop busy", false, true, false},
		{"feeder holding a delivery", true, false, false},
		{"idle", true, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newStall(time.Hour) // suspect, with the start's poke pending
			<-st.wake
			st.loopIdle.Store(tt.loopIdle)
			st.feederIdle.Store(tt.feeder)
			a := &acks{st: st, wait: time.Hour, pending: map[uint64]pendingAck{}}
			for n := uint64(1); n <= 3; n++ {
				a.pending[n] = pendingAck{id: uuid.New(), timer: time.AfterFunc(time.Hour, func() {})}
				st.acking.Add(1)
			}
			for n := uint64(1); n <= 3; n++ {
				if !a.take(n) {
					t.Fatalf("ack %d not pending", n)
				}
				if n < 3 && len(st.wake) > 0 {
					t.Fatalf("the check was poked with %d acks still in flight", 3-n)
				}
			}
			if poked := len(st.wake) > 0; poked != tt.poked {
				t.Errorf("the last confirmation poked the check: %v, want %v", poked, tt.poked)
			}
		})
	}
}
