package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A worker that is not suspect parks its stall check: no tick while it
// waits for orders (every idle host's worker woke every 2 s for nothing),
// and a reconnect or a suspicion wakes it again. Counted, not timed: a
// free-running ticker ticked about forty times in the window below.
func TestStallCheckParksWhileNotSuspect(t *testing.T) {
	const every = 5 * time.Millisecond
	s := newStall(every)
	s.suspect.Store(false)
	reconnected := make(chan nats.Status, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// No consumer: the check asks it only when suspect and idle, and the
	// loop and the feeder are busy here.
	go func() {
		defer close(done)
		s.watch(ctx, nil, reconnected, func(error) { t.Error("the stall check stopped the tenure") }, t.Logf)
	}()
	defer func() { cancel(); <-done }()

	time.Sleep(40 * every) // an observation window: not suspect
	if n := s.ticks.Load(); n > 1 {
		t.Fatalf("%d ticks in 40 periods while not suspect; want the check parked", n)
	}
	waitTicks := func(what string) {
		t.Helper()
		from := s.ticks.Load()
		deadline := time.Now().Add(10 * time.Second)
		for s.ticks.Load() < from+2 {
			if time.Now().After(deadline) {
				t.Fatalf("no checks within 10 s of %s; want the check woken", what)
			}
			time.Sleep(every)
		}
	}
	reconnected <- nats.CONNECTED
	waitTicks("a reconnect")
	if !s.suspect.Load() {
		t.Fatal("a reconnect did not make the worker suspect")
	}
	s.suspect.Store(false)
	time.Sleep(4 * every) // parks again at its next tick
	s.suspectNow()
	waitTicks("suspectNow")
}
