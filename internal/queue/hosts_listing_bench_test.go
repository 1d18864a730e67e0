package queue_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// BenchmarkWorkersAt1000Hosts reads the hosts listing's heartbeats and
// standby reports (Queue.Workers) of 1,000 online hosts, 1,000 with a
// standby, and reports the messages the reading connection sent per
// listing (its JetStream requests): each one sent with NATS away waited
// out its timeout, one after another.
func BenchmarkWorkersAt1000Hosts(b *testing.B) {
	nc, err := queue.Connect(testenv.NATS(b), "hosts-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	ctx := testenv.Context(b)
	q, err := queue.New(ctx, nc, queue.Options{LeaseTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range 1000 {
		h := fmt.Sprintf("h%04d", i)
		if err := q.Heartbeat(ctx, queue.HostInfo{Host: h, Instance: h + "/a", Version: "v1", StartedAt: now, LastSeen: now}); err != nil {
			b.Fatal(err)
		}
		if _, err := q.StandbyBeat(ctx, queue.HostInfo{Host: h, Instance: h + "/b", Version: "v1", StartedAt: now, LastSeen: now}); err != nil {
			b.Fatal(err)
		}
	}
	sent := nc.Stats().OutMsgs
	b.ResetTimer()
	for b.Loop() {
		online, standbys, err := q.Workers(ctx)
		if err != nil || len(online) != 1000 || len(standbys) != 1000 {
			b.Fatalf("%d online, %d standbys, %v: want 1000 each", len(online), len(standbys), err)
		}
	}
	b.ReportMetric(float64(nc.Stats().OutMsgs-sent)/float64(b.N), "requests/op")
}
