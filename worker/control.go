package worker

import (
	"context"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// controlTimeout bounds the PostgreSQL read a control message causes.
const controlTimeout = 5 * time.Second

// control handles a wake-up on the host's control subject. The message is
// not trusted: anyone who can publish on the bus could have sent it, so it
// only makes the worker look for a recorded cancel request of the order it
// is running (applyCancel).
func (w *Worker) control(c queue.Control) {
	// The order may be about to start: the claim committed, the process
	// not yet begun. run reads this note when it makes the order current,
	// under the same lock, so an early wake-up is never lost (the
	// heartbeat catches wake-ups lost on the bus).
	w.mu.Lock()
	current := w.current != nil && w.current.id == c.OrderID
	if !current {
		w.earlyWake = c.OrderID
	}
	w.mu.Unlock()
	if !current {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	w.applyCancel(ctx, c.OrderID, true)
}

// applyCancel signals the running order id when PostgreSQL records a
// request to cancel it, and does nothing otherwise. It is safe to call
// again for the same request (the signal is sent once per request).
// Besides control messages (woken), the order loop calls it when an order
// starts after an early wake-up and on its heartbeat, to catch a request
// whose wake-up was lost; only a wake-up with no request is worth a log.
func (w *Worker) applyCancel(ctx context.Context, id uuid.UUID, woken bool) {
	if !w.isCurrent(id) {
		return // not running here: a late or forged message
	}
	req, err := w.store.CancelRequestOf(ctx, id)
	if order.ErrorCode(err) == order.CodeNotFound {
		if !woken {
			return
		}
		w.logger.Warn("control message for the running order, but no cancel request is recorded; ignored",
			"order_id", id)
		return
	}
	if err != nil {
		w.logger.Error("read cancel request; the order keeps running", "order_id", id, "error", err)
		return
	}
	if req.Host != w.opts.Host {
		w.logger.Warn("cancel request recorded for another host; ignored", "order_id", id, "request_host", req.Host)
		return
	}
	sig, ok := ParseSignal(req.Signal)
	if !ok {
		w.logger.Warn("cancel request with an unknown signal; ignored", "order_id", id, "signal", req.Signal)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current == nil || w.current.id != id {
		return // it finished meanwhile
	}
	if w.current.applied.Equal(req.RequestedAt) {
		return // already signalled: a repeat would restart the kill grace
	}
	w.current.applied = req.RequestedAt
	select {
	case w.current.signals <- sig:
		w.logger.Info("cancel requested", "order_id", id, "signal", req.Signal, "actor", req.Actor,
			"requested_at", req.RequestedAt)
	default:
	}
}

func (w *Worker) isCurrent(id uuid.UUID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current != nil && w.current.id == id
}

// ParseSignal maps the signal names a cancel request may use.
func ParseSignal(name string) (syscall.Signal, bool) {
	switch name {
	case "", "SIGTERM":
		return syscall.SIGTERM, true
	case "SIGHUP":
		return syscall.SIGHUP, true
	case "SIGINT":
		return syscall.SIGINT, true
	case "SIGKILL":
		return syscall.SIGKILL, true
	case "SIGUSR1":
		return syscall.SIGUSR1, true
	case "SIGUSR2":
		return syscall.SIGUSR2, true
	}
	return 0, false
}
