package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPartialOutputEndsWithItsContextWhenNATSGoesAway: a successor reads
// an interrupted order's live output before it marks the order and reaps
// the dead worker's processes (worker/takeover.go, mark), so the read
// must end when its context does. It read through an ordered consumer,
// whose every Fetch makes its consumer again and retries that, without
// a context, until it succeeds: the server gone after the read began,
// the read hung until NATS came back, and the dead worker's processes
// ran on unreaped meanwhile.
func TestPartialOutputEndsWithItsContextWhenNATSGoesAway(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "partial-stall-test", queue.Options{})
	id := uuid.New()
	// Enough chunks for many fetches: the read is still in its loop
	// when the server stops.
	publishChunks(t, q, "h1", id, 20000, 8)

	ctx, cancel := context.WithTimeout(testenv.Context(t), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := q.PartialOutput(ctx, "h1", id, 1<<20, 0)
		done <- err
	}()
	// The read has begun once its consumer exists.
	js := q.JetStream()
	for {
		s, err := js.Stream(testenv.Context(t), queue.LiveStream)
		if err != nil {
			t.Fatal(err)
		}
		if s.CachedInfo().State.Consumers > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the read ended (%v) before its consumer was seen: publish more chunks", err)
		default:
		}
	}
	ns.Shutdown()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the read ended without an error after the server stopped mid-read: it may not be whole")
		}
		t.Logf("the read ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the read of the live output outlived its context by a minute with the server gone")
	}
}
