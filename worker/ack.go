package worker

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ackConfirmWait bounds how long the server may take to confirm an ack
// before the worker suspects it was lost. Confirmations take well under a
// millisecond; a consumer without a leader answers at once that nobody
// listens.
const ackConfirmWait = 2 * time.Second

// ack acknowledges msg and has the server confirm it, in the background so
// the next order does not wait. A plain ack is fire and forget: one sent
// while a NATS cluster elected the consumer's leader was lost without a
// trace, no error reached the message iterator (nats.go handles the
// leadership change itself), and with both held messages counted as
// unacked the host waited for the 30 s ack timer (TestFaultsNATSCluster:
// 22.9 s, once in about seven runs). An ack the server does not confirm
// marks the tenure's consumer suspect; the stall check (stall.go) then
// compares the consumer's view once the worker is idle, and rewinds.
func (w *Worker) ack(msg jetstream.Msg, id uuid.UUID) {
	st := w.acks.Load()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ackConfirmWait)
		defer cancel()
		err := msg.DoubleAck(ctx)
		if err == nil {
			return
		}
		if st != nil {
			st.suspectNow()
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) {
			return // the worker is stopping: its successor settles what is held
		}
		w.logger.Warn("ack not confirmed; the consumer is checked once the worker is idle", "order_id", id, "error", err)
	}()
}
