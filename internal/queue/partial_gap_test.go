package queue_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPartialOutputMarksWhatTheStreamLost: an interrupted order's partial
// output, read back from ORDERLY_LIVE by its successor, places the chunks
// by their offsets. A NATS restart lost the chunks before it (and the
// stream's hour or its 256 MiB drops an old order's first chunks the
// same way); once the stream was made again, PartialOutput gave the
// chunks after the hole as the output's beginning, not truncated, and
// that was stored as the order's output. Now the bytes the stream does
// not hold are the stored copy's truncation marker, counting them, and
// the stream is truncated; a repeated chunk is not written twice.
func TestPartialOutputMarksWhatTheStreamLost(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "queue-test", queue.Options{})
	nc, ctx := q.Conn(), testenv.Context(t)
	id := uuid.New()
	publish := func(stream string, offset int64, p string) {
		t.Helper()
		if err := q.PublishOutput("h1", id, stream, offset, []byte(p)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	publish("stdout", 0, "lost 1\n")
	publish("stderr", 0, "err 1\n")
	// Once the connection is back, an API made the stream again
	// (queue.New does, as LiveFeed.restart).
	restartedAndMadeAgain(t, ctx, ns, q)
	publish("stdout", 14, "kept 3\n")
	publish("stdout", 14, "kept 3\n") // a repeat
	publish("stdout", 21, "kept 4\n")
	publish("stderr", 6, "err 2\n") // nothing lost before it
	// A core publish is stored after its flush returns: wait for the
	// four, as a successor reads the stream long after the worker wrote.
	liveStored(t, ctx, q, 4)

	p, err := q.PartialOutput(ctx, "h1", id, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := order.TruncationMarker(14) + "kept 3\nkept 4\n"; string(p.Stdout) != want || !p.StdoutTruncated {
		t.Errorf("stdout %q (truncated %v), want %q truncated", p.Stdout, p.StdoutTruncated, want)
	}
	if want := "err 2\n"; string(p.Stderr) != order.TruncationMarker(6)+want || !p.StderrTruncated {
		t.Errorf("stderr %q (truncated %v), want the marker for 6 bytes and %q, truncated", p.Stderr, p.StderrTruncated, want)
	}
}
