package worker

import (
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// unsettled is an order whose result is committed, with the next order's
// claim, and whose finished event and ack wait for that next order's
// start (settleAfterStart).
type unsettled struct {
	msg   *delivery
	o     *order.Order
	f     postgres.Finish
	ran   time.Duration
	alone bool
}

// settleAfterStart leaves the finished event and the ack of o, whose
// result committed with the next order's claim, to be sent once the next
// order's leader has started (executor.Request.Started), or, when
// nothing of it starts, once its run ends, or on any way out of execute.
//
// In a backlog the worker's path from one order's exit to the next one's
// start is serial: the result with the claim, its commit, then the host
// policy and the fork. The event and the ack (an encode, two publishes,
// the ack's confirmation timer, the wake-up of nats.go's flusher and the
// server's work behind them) were on that path; after the start they run
// while the command does. Nothing waits for them there: the commit came
// first, as the contract asks (DESIGN §2.2); the acks keep the stream's
// order, this one sent before the next order's result is written; the
// next message is already delivered (it is the one claimed), and the
// one after it follows this ack as before, while the next order runs.
// A client waiting for o hears of it later by the next order's host
// policy and fork (docs/decisions.md, "The backlog's serial path
// (hD27)").
func (w *Worker) settleAfterStart(msg *delivery, o *order.Order, f postgres.Finish, ran time.Duration) {
	w.settleUnsettled() // none is left by now; kept in order if one were
	alone := w.alone == o.ID
	w.alone = uuid.Nil
	w.unsettled = unsettled{msg: msg, o: o, f: f, ran: ran, alone: alone}
}

// settleUnsettled sends the finished event and the ack of the order
// settleAfterStart left, if any.
func (w *Worker) settleUnsettled() {
	u := w.unsettled
	if u.o == nil {
		return
	}
	w.unsettled = unsettled{}
	w.finishedAs(u.msg, u.o, u.f, u.ran, u.alone)
}
