package queue_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// BenchmarkPurgeAckedListing is BenchmarkPurgeAckedRound with every round
// the listing of every consumer, the backstop PurgeAcked runs every
// Options.PurgeListEvery.
func BenchmarkPurgeAckedListing(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("hosts=%d/active=10", n), func(b *testing.B) {
			benchPurgeRound(b, queue.Options{AckWait: time.Minute, PurgeListEvery: time.Nanosecond}, n, 10)
		})
	}
}

// BenchmarkPurgeEmptyOrCheck: what a purge that finds nothing to remove
// costs (another API replica purged the host first) against the read that
// would tell beforehand (the host's first message still stored), with N
// host consumers on the stream: nats-server's purge walks every consumer
// of the stream to move those of the purged subject.
func BenchmarkPurgeEmptyOrCheck(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		for _, what := range []string{"purge", "first-message"} {
			b.Run(fmt.Sprintf("hosts=%d/%s", n, what), func(b *testing.B) {
				url := testenv.NATS(b)
				nc, err := queue.Connect(url, "purge-bench")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(nc.Close)
				ctx := testenv.Context(b)
				q, err := queue.New(ctx, nc, queue.Options{AckWait: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				for i := range n {
					if _, err := q.HostConsumer(ctx, fmt.Sprintf("bench-%05d", i)); err != nil {
						b.Fatal(err)
					}
				}
				st, err := q.JetStream().Stream(ctx, queue.OrdersStream)
				if err != nil {
					b.Fatal(err)
				}
				subject := queue.OrdersSubject + "bench-00000"
				var cpu time.Duration
				b.ResetTimer()
				for range b.N {
					c0 := cpuTime()
					if what == "purge" {
						err = st.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(2))
					} else if _, err = st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject)); errors.Is(err, jetstream.ErrMsgNotFound) {
						err = nil
					}
					cpu += cpuTime() - c0
					if err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}
