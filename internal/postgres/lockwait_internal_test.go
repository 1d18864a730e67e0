package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// BenchmarkBackendTracerUnwatched is what every pool's tracer adds to a
// statement nobody watches (docs/decisions.md, hI19): a context lookup
// that finds no Backend, under a context a few values deep as the
// worker's are.
func BenchmarkBackendTracerUnwatched(b *testing.B) {
	type k int
	ctx := context.Background()
	for i := range 4 {
		ctx = context.WithValue(ctx, k(i), i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var t backendTracer
	b.ReportAllocs()
	for b.Loop() {
		t.TraceQueryStart(ctx, nil, pgx.TraceQueryStartData{})
	}
}
