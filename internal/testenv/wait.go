package testenv

import (
	"context"
	"testing"
	"time"
)

// WaitUntil polls cond every 20 ms until it holds, and fails the test
// saying what did not happen when d passes first: tests wait for the
// event with a deadline, never for a fixed sleep.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s", what, d)
		case <-tick.C:
		}
	}
}
