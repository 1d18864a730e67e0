package api

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestSharedLimitContentionGrantsNoMore: with limits.rate_shared, a
// request whose count lost every compare-and-set race was limited by the
// replica's own bucket instead, which the shared counters had never
// spent: a client sending many requests at once for one key (its
// principal, its address) made its own contention, and each replica gave
// it a second full allowance. Contention is not an outage: such a request
// is refused (429, retry in a second), so two replicas never grant more
// than the shared limit; and a replica counts its own requests for a key
// in turn, so the burst still gets most of its allowance.
func TestSharedLimitContentionGrantsNoMore(t *testing.T) {
	url := testenv.NATS(t)
	const limit = 300
	var replicas []*Server
	for i := range 2 {
		q := testenv.Queue(t, url, "rate-replica-"+string(rune('a'+i)), queue.Options{})
		rc, err := q.RateCounter(testenv.Context(t), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, New(Deps{Logger: testenv.Logger(t), SharedLimits: rc,
			Settings: func() Settings { return Settings{RatePerPrincipal: limit, RateShared: true} }}))
	}
	var granted, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 1500 {
		wg.Go(func() {
			if err := replicas[i%2].spendPrincipal(testenv.Context(t), "flooder"); err == nil {
				granted.Add(1)
			} else {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if g := granted.Load(); g > limit {
		t.Fatalf("1500 concurrent requests over two replicas: %d granted, want at most the shared limit %d", g, limit)
	}
	// Each replica counts its own requests for a key one at a time, so
	// only the two replicas race: a burst is not refused far below its
	// limit (24 of 300 granted when every request raced every other).
	if g := granted.Load(); g < limit/2 {
		t.Fatalf("1500 concurrent requests over two replicas: %d granted, want most of the shared limit %d", g, limit)
	}
	t.Logf("%d granted, %d refused", granted.Load(), refused.Load())
}
