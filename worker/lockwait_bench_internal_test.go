package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// BenchmarkWatchWaitQuickStatement is what watchWait adds to a store call
// that ends before StatementWaitWarn: a timer started and stopped and the
// context that carries the backend's note (docs/decisions.md, hI19).
func BenchmarkWatchWaitQuickStatement(b *testing.B) {
	w := &Worker{opts: Options{StatementWaitWarn: statementWaitWarn}, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	id := order.NewID()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = w.watchWait(ctx, "claim order", id, uuid.Nil, func(context.Context) error { return nil })
	}
}
