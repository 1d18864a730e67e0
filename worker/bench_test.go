package worker_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// BenchmarkBacklog measures the worker's per-order cost on one host: b.N
// orders of /bin/true are queued first, then one worker drains them. It
// uses the test PostgreSQL (fsync off), so it isolates CPU from disk; make
// bench measures the production configuration.
func BenchmarkBacklog(b *testing.B) {
	e := newEnv(b)
	ids := make([]uuid.UUID, b.N)
	for i := range ids {
		ids[i] = e.submit("bench", "true")
	}
	b.ResetTimer()
	stop, _ := e.start("bench", nil)
	e.waitStatus(ids[len(ids)-1], order.StatusSucceeded)
	b.StopTimer()
	stop()
}
