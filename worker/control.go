package worker

import (
	"syscall"

	"github.com/orderly-run/orderly/internal/queue"
)

// control routes a cancel request to the order being executed.
func (w *Worker) control(c queue.Control) {
	sig, ok := ParseSignal(c.Signal)
	if !ok {
		w.logger.Warn("control request with unknown signal", "order_id", c.OrderID, "signal", c.Signal)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current == nil || w.current.id != c.OrderID {
		return
	}
	select {
	case w.current.signals <- sig:
		w.logger.Info("cancel requested", "order_id", c.OrderID, "signal", c.Signal, "actor", c.Actor)
	default:
	}
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
