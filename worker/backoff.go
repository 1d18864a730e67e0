package worker

import (
	"context"
	"time"
)

// backoff is a context-aware exponential delay between retries.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

// wait sleeps for the next delay, or until ctx ends (then it returns
// ctx's error).
func (b *backoff) wait(ctx context.Context) error {
	if b.next < b.min {
		b.next = b.min
	}
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (b *backoff) reset() { b.next = b.min }

// upcoming is the delay the next wait sleeps.
func (b *backoff) upcoming() time.Duration { return max(b.next, b.min) }
