package testenv

import (
	"context"
	"errors"
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

// TryTimeout bounds one try of WaitUntilAnswered's condition.
const TryTimeout = 2 * time.Second

// WaitUntilAnswered is WaitUntil for a condition that sends NATS
// requests: each try gets a context of its own, ended after TryTimeout
// or with the wait. A request written in the instant after nats-server
// went away and before its client read the server's end is lost: nats.go
// reconnects within a few hundred milliseconds but never sends it again,
// and its answer never comes. Under the test's Context (two minutes) one
// such request held a whole wait past its deadline
// (TestStage0ExecuteSendsEveryLineLiveAcrossANATSRestart's probe of the
// live stream's consumers, once in CI and once in 20 runs under load);
// under its try's it costs one try.
func WaitUntilAnswered(t testing.TB, d time.Duration, what string, cond func(ctx context.Context) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	WaitUntil(t, d, what, func() bool {
		tctx, cancel := context.WithTimeout(ctx, TryTimeout)
		defer cancel()
		ok := cond(tctx)
		if !ok && ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
			t.Logf("%s: a try went unanswered for %s; trying again", what, TryTimeout)
		}
		return ok
	})
}
