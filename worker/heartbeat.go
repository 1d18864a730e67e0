package worker

import (
	"context"
	"errors"
	"time"

	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/queue"
)

// heartbeats writes the host's heartbeat at once and then each time beat
// asks (beats), until ctx ends: one at a time, beside the renewals, so
// that a heartbeat held up holds none of them up. A heartbeat that finds
// the lease in doubt (queue.ErrNotHolder) stops claims until a renewal's
// verdict (hold.doubt) and asks beat for that renewal at once (doubts).
func (w *Worker) heartbeats(ctx context.Context, lease *queue.Lease, h *hold, beats <-chan struct{}, doubts chan<- struct{}) {
	started := time.Now()
	for {
		info := queue.HostInfo{Host: w.opts.Host, Instance: w.opts.Instance, Version: w.opts.Version,
			StartedAt: started, LastSeen: time.Now(), RestoreGuard: w.restoreGuard(),
			PostgresUnreachable: w.pg.outage()}
		w.mu.Lock()
		if w.current != nil {
			id := w.current.id
			info.CurrentOrder = &id
		}
		w.mu.Unlock()
		if err := lease.Beat(ctx, info); err != nil && ctx.Err() == nil {
			if errors.Is(err, queue.ErrNotHolder) {
				h.doubt()
				select {
				case doubts <- struct{}{}:
				default: // asked already, not yet renewed
				}
			}
			w.opts.Metrics.LeaseFailed(w.opts.Host, metrics.LeaseHeartbeat)
			w.logger.Warn("heartbeat", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-beats:
		}
	}
}
