package worker

import (
	"context"
	"time"
)

// nextWait is Options.NextWait's default. The wait ends at the next
// delivery, a round trip through nats-server after the previous order's
// ack, which the worker sent when this order started: tens to hundreds
// of microseconds, milliseconds on a loaded machine. Without it the
// result commits alone, and the next order's claim waits for the same
// delivery after it, then commits on its own: a flushed commit more per
// order, and the worker idle between them. A `true` done within a
// millisecond, its process record written with its result (recordWait),
// outran the delivery for 21 – 37 % of a backlog's orders
// (docs/benchmarks.md, "The backlog's pipelined claims, counted").
const nextWait = 10 * time.Millisecond

// nextDelivery returns the next message for the result of the order of
// msg to share its commit with: one already waiting, or, when the stream
// said at msg's delivery that more of the host's messages followed it,
// the one delivered within NextWait. nil when there is none (the result
// commits alone), or the worker is stopping.
func (w *Worker) nextDelivery(ctx context.Context, msg *delivery, msgs <-chan *delivery) *delivery {
	if next := ready(ctx, msgs); next != nil || ctx.Err() != nil {
		return next
	}
	if !msg.following() {
		return nil
	}
	t := time.NewTimer(w.opts.NextWait)
	defer t.Stop()
	select {
	case m, ok := <-msgs:
		if ok {
			return m
		}
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}
