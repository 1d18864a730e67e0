package queue_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// BenchmarkRaiseClaimMark is one write of a host's claim mark (a KV get
// and a compare-and-set update) on an embedded server that fsyncs every
// write, as serve's does: what the first order of a worker's tenure waits
// for before it runs (worker/replay.go, writeFirstClaim). Signed, as a
// worker with a NATS credential writes it, and unsigned, as before the
// signature (queue.MarkKey).
func BenchmarkRaiseClaimMark(b *testing.B) {
	s := syncAlwaysNATS(b)
	q := testenv.Queue(b, s.ClientURL(), "bench", queue.Options{})
	at := time.Now()
	ctx := b.Context()
	for _, c := range []struct {
		name string
		key  queue.MarkKey
	}{{"unsigned", nil}, {"signed", queue.NewMarkKey([]byte("seed"))}} {
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				if err := q.RaiseClaimMark(ctx, "bench-"+c.name, queue.ClaimMark{Seq: uint64(i + 1), Stored: at, Attempt: 1}, c.key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
