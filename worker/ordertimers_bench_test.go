package worker

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// BenchmarkOrderTimers is what keeping a short order alive costs: the
// heartbeat and grace timers armed at its start and stopped at its end,
// neither firing (docs/benchmarks.md, "Serve's hand-offs per order,
// counted").
func BenchmarkOrderTimers(b *testing.B) {
	w := &Worker{opts: Options{AckWait: 30 * time.Second, ShutdownGrace: 30 * time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := &order.Order{ID: order.NewID(), Attempt: 1}
	b.ReportAllocs()
	for b.Loop() {
		execCtx, stopExec := context.WithCancel(context.WithoutCancel(ctx))
		stop := w.orderTimers(ctx, nil, o, execCtx, stopExec)
		stop()
		stopExec()
	}
}
