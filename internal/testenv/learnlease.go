package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
)

// LearnSignedLease has each of standbys wait for host's lease, signed
// with k, while holder renews it three times a third of ttl apart, and
// then ends the waits, none of which may take the host: each queue has
// then seen signed values, as a standby that waited through a holder's
// renewals has. One that never saw one honours an unsigned value as an
// older holder's (decisions.md, hE20's Left).
func LearnSignedLease(t testing.TB, host string, k queue.MarkKey, ttl time.Duration, holder *queue.Lease, standbys ...*queue.Queue) {
	t.Helper()
	ctx := Context(t)
	wctx, endWait := context.WithCancel(ctx)
	defer endWait()
	waited := make(chan error, len(standbys))
	for _, q := range standbys {
		waiting := make(chan struct{})
		go func() {
			_, err := q.AcquireSignedLease(wctx, host, "first wait", k, func(string) { close(waiting) })
			waited <- err
		}()
		<-waiting
	}
	for range 3 {
		time.Sleep(ttl / 3)
		if _, err := holder.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	endWait()
	for range standbys {
		if err := <-waited; err == nil {
			t.Fatal("a first wait took the host while its holder renewed")
		}
	}
}
