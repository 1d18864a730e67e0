package worker

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// controlTimeout bounds the PostgreSQL read a control message causes.
const controlTimeout = 5 * time.Second

// wakeGap is the least time between two reads that wake-ups cause, and
// wakeWarnEvery the least between two warnings of a wake-up with no
// request: a flood of forged wake-ups (the API's credential, or an open
// bus) cost a PostgreSQL read and a warning line each.
const (
	wakeGap       = 100 * time.Millisecond
	wakeWarnEvery = 30 * time.Second
)

// wakes coalesces control wake-ups: one read at a time, and the wake-ups
// that come during it make one more read after it, not one each.
type wakes struct {
	mu    sync.Mutex
	busy  bool      // a read is in flight or waiting for its turn
	again uuid.UUID // the order a wake-up during it named; Nil for none
	last  time.Time // when the last read started

	warned time.Time // the last warning of a wake-up with no request
	held   int       // warnings held back since
}

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
	w.wakes.mu.Lock()
	if w.wakes.busy {
		w.wakes.again = c.OrderID
		w.wakes.mu.Unlock()
		return
	}
	w.wakes.busy = true
	w.wakes.mu.Unlock()
	go w.wakeReads(c.OrderID)
}

// wakeReads reads the cancel request of id, then of the order a wake-up
// that came meanwhile named, until none came; reads start wakeGap apart.
// A real request's wake-up that comes during a read is read after it: it
// is never lost in the coalescing.
func (w *Worker) wakeReads(id uuid.UUID) {
	for {
		w.wakes.mu.Lock()
		wait := wakeGap - time.Since(w.wakes.last)
		w.wakes.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
		w.wakes.mu.Lock()
		w.wakes.last = time.Now()
		w.wakes.again = uuid.Nil
		w.wakes.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
		w.applyCancel(ctx, id, true)
		cancel()
		w.wakes.mu.Lock()
		if w.wakes.again == uuid.Nil {
			w.wakes.busy = false
			w.wakes.mu.Unlock()
			return
		}
		id = w.wakes.again
		w.wakes.mu.Unlock()
	}
}

// warnWake reports whether a wake-up with no request may be warned of
// now, and how many were held back since the last warning.
func (w *Worker) warnWake() (held int, ok bool) {
	w.wakes.mu.Lock()
	defer w.wakes.mu.Unlock()
	if !w.wakes.warned.IsZero() && time.Since(w.wakes.warned) < wakeWarnEvery {
		w.wakes.held++
		return 0, false
	}
	held, w.wakes.held, w.wakes.warned = w.wakes.held, 0, time.Now()
	return held, true
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
		if held, ok := w.warnWake(); ok {
			w.logger.Warn("control message for the running order, but no cancel request is recorded; ignored",
				"order_id", id, "held_back", held)
		}
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
	w.current.applied, w.current.actor = req.RequestedAt, req.Actor
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
