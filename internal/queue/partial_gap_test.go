package queue_test

import (
	"context"
	"testing"
	"time"

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
	testenv.NATSServerRestarted(t, ns)
	// Once the connection is back, an API made the stream again
	// (queue.New does, as LiveFeed.restart).
	for !nc.IsConnected() {
		if ctx.Err() != nil {
			t.Fatalf("the connection is not back after the restart: %v", nc.LastError())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A request sent as the connection came back can go unanswered
	// (seen: create stream ORDERLY_ORDERS waited out the test's two
	// minutes); each try gets 5 s, as jetstream's default timeout.
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := queue.New(tctx, nc, queue.Options{})
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the stream was not made again: %v", err)
		}
	}
	publish("stdout", 14, "kept 3\n")
	publish("stdout", 14, "kept 3\n") // a repeat
	publish("stdout", 21, "kept 4\n")
	publish("stderr", 6, "err 2\n") // nothing lost before it
	// A core publish is stored after its flush returns: wait for the
	// four, as a successor reads the stream long after the worker wrote.
	for {
		st, err := q.JetStream().Stream(ctx, queue.LiveStream)
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().State.Msgs >= 4 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the stream holds %d messages, want the 4 published", st.CachedInfo().State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}

	p, err := q.PartialOutput(ctx, "h1", id, 1<<20)
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
