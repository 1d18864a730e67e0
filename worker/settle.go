package worker

import (
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// unsettled is what the worker sends once the order it starts has
// started (settleUnsettled): the previous order's finished event and
// ack, when its result committed with this order's claim
// (settleAfterStart), and this order's started event (start).
type unsettled struct {
	msg   *delivery
	o     *order.Order
	f     postgres.Finish
	ran   time.Duration
	alone bool
	start *order.Order
}

// settleAfterStart leaves the finished event and the ack of o, whose
// result committed with the next order's claim, to be sent with the next
// order's started event once its leader has started
// (executor.Request.Started), or, when nothing of it starts, once its
// run ends, or on any way out of execute.
//
// In a backlog the worker's path from one order's exit to the next one's
// start is serial: the result with the claim, its commit, then the host
// policy and the fork. The three messages (their encoding, the ack's
// confirmation timer, the wake-up of nats.go's flusher) were on that
// path; after the start they go while the command runs, still in one
// burst, one wake-up of the flusher as before: sent apart, the started
// event before the fork and the rest after it, they cost a wake-up more
// per order. Nothing waits for them there: the commit came first, as
// the contract asks (DESIGN §2.2); the acks keep the stream's order,
// this one sent before the next order's result is written; the next
// message is already delivered (it is the one claimed), and the one
// after it follows this ack as before, while the next order runs; the
// started event still precedes the order's output (Run reads none
// before Started). A client waiting for o hears of it later by the next
// order's host policy and fork (docs/decisions.md, "The backlog's
// serial path (hD27)").
func (w *Worker) settleAfterStart(msg *delivery, o *order.Order, f postgres.Finish, ran time.Duration) {
	w.settleUnsettled() // none is left by now; kept in order if one were
	alone := w.alone == o.ID
	w.alone = uuid.Nil
	w.unsettled = unsettled{msg: msg, o: o, f: f, ran: ran, alone: alone}
}

// settleUnsettled sends what settleAfterStart and the order's start left,
// if anything.
func (w *Worker) settleUnsettled() {
	u := w.unsettled
	if u.o == nil && u.start == nil {
		return
	}
	w.unsettled = unsettled{}
	if u.o != nil {
		w.finishedAs(u.msg, u.o, u.f, u.ran, u.alone)
	}
	if o := u.start; o != nil {
		w.publishEvent(queue.Event{OrderID: o.ID, Type: "started", Status: string(order.StatusRunning), Host: o.Host,
			TTL: startedTTL(o)})
	}
}
