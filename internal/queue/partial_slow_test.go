package queue_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPartialOutputFromASlowServerIsWholeOrAnError: the read of an
// interrupted order's live output goes to its mark, which stores it for
// good (a later read stores only where the order holds none). A server
// slow to deliver the chunks, their pull's messages reaching the reader
// after its Fetch stopped waiting while the consumer's info still
// answered, ended the read short without an error: its output was
// stored as if whole. The read must now say it is short.
func TestPartialOutputFromASlowServerIsWholeOrAnError(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "partial-slow-writer", queue.Options{})
	// Past a Fetch's wait (1 s) and nats.go's second after it, well
	// inside the 5 s the Info waits.
	addr, slow := testenv.SlowDeliveries(t, ns.Addr().String(), "$JS.ACK."+queue.LiveStream+".", 3*time.Second)
	reader := testenv.Queue(t, "nats://"+addr, "partial-slow-reader", queue.Options{})
	id := uuid.New()
	stdout, stderr := publishChunks(t, q, "h1", id, 40, 8)

	whole := func(p queue.Partial) bool {
		return bytes.Equal(p.Stdout, stdout) && bytes.Equal(p.Stderr, stderr)
	}
	// The chunks are published without an ack: read once the stream
	// holds them all.
	testenv.WaitUntil(t, 10*time.Second, "the chunks in the live stream", func() bool {
		p, err := q.PartialOutput(testenv.Context(t), "h1", id, 1<<20, 0)
		return err == nil && whole(p)
	})
	// Through the relay, not slow: the read is whole.
	p, err := reader.PartialOutput(testenv.Context(t), "h1", id, 1<<20, 0)
	if err != nil || !whole(p) {
		t.Fatalf("through the relay, not slow: the read gave %d + %d bytes of %d + %d (%v)", len(p.Stdout), len(p.Stderr), len(stdout), len(stderr), err)
	}

	slow(true)
	start := time.Now()
	p, err = reader.PartialOutput(testenv.Context(t), "h1", id, 1<<20, 0)
	slow(false)
	switch {
	case err != nil:
		t.Logf("the slow read ended in %v: %v", time.Since(start).Round(time.Millisecond), err)
	case !whole(p):
		t.Fatalf("a server slow to deliver the chunks: the read gave %d + %d bytes of %d + %d without an error, a short output taken for whole", len(p.Stdout), len(p.Stderr), len(stdout), len(stderr))
	}
}
