package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedReadsAStreamMadeAgain: a follower's feed that had read far
// into ORDERLY_LIVE (every order's output shares it, so a follower's last
// sequence is in the stream's thousands) reads its order's chunks from a
// stream a NATS restart lost and an API made again. The feed made its
// consumer again from the sequence after its last one, but the new
// stream's sequences start at 1: every message of the new stream below
// that number, the order's chunks and its finished event among them, was
// skipped, and a follower on a busy stream got nothing more live (nor
// the gap that OnInterrupted tells of) until the order ended.
func TestLiveFeedReadsAStreamMadeAgain(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "queue-test", queue.Options{})
	nc, ctx := q.Conn(), testenv.Context(t)
	other, id := uuid.New(), uuid.New()
	publishChunks(t, q, "h1", other, 200, 10) // the other orders' traffic
	if err := q.PublishOutput("h1", id, "stdout", 0, []byte("before\n")); err != nil {
		t.Fatal(err)
	}
	feed, err := q.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feed.Stop)
	msgs := feed.Messages(ctx) // read all along, as a follower does
	next := func(wait time.Duration) []byte {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatal("the feed ended")
			}
			return m.Data
		case <-time.After(wait):
			return nil
		}
	}
	if got := next(30 * time.Second); string(got) != "before\n" {
		t.Fatalf("the first chunk is %q, want %q", got, "before\n")
	}

	testenv.NATSServerRestarted(t, ns)
	// The feed finds its consumer gone after three silent heartbeats and
	// makes the stream again (this queue may create streams); the worker
	// goes on publishing, its chunks lost until the stream is there. A
	// request sent as the connection comes back can go unanswered: each
	// look gets 5 s (with only ctx for a bound, one held the test for
	// its two minutes, once in six runs).
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := q.JetStream().Stream(tctx, queue.LiveStream)
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, context.DeadlineExceeded) && nc.IsConnected() {
			t.Logf("waiting for the stream: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("ORDERLY_LIVE was not made again")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := q.PublishOutput("h1", id, "stdout", 20, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The feed made its consumer a second after the stream at most; a
	// consumer's silence is noticed after 15 s. It says first that the
	// stream was made again (LiveLost, no data: hB15), once.
	got := next(45 * time.Second)
	if got == nil {
		got = next(45 * time.Second)
	}
	if string(got) != "after\n" {
		t.Errorf("the chunk after the restart is %q, want %q", got, "after\n")
	}
}

// TestResumedLiveFeedKeepsItsPlaceAtARestart: a feed resumed after an
// event id (an SSE client's Last-Event-ID) that has handed nothing over
// when its consumer is lost, the stream kept, makes it again after that
// id: it has no message's time to tell a remade stream by, and starting
// from the stream's beginning would hand the client what it had again.
func TestResumedLiveFeedKeepsItsPlaceAtARestart(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	if err := q.PublishOutput("h1", id, "stdout", 0, []byte("seen\n")); err != nil {
		t.Fatal(err)
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	// A core publish is stored after its flush returns: the stream's
	// last sequence read at once was once from before "seen", the feed
	// resumed before it, and its first consumer, deleted below before
	// "seen" was stored, had handed nothing over; the remade one read it.
	var seen uint64
	testenv.WaitUntil(t, 10*time.Second, `"seen" stored`, func() bool {
		m, err := st.GetLastMsgForSubject(ctx, queue.OutputSubjectOf("h1", id))
		if err != nil {
			return false
		}
		seen = m.Sequence
		return true
	})
	feed, err := q.Live(ctx, "h1", id, seen) // resumed after "seen"
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feed.Stop)
	msgs := feed.Messages(ctx)
	// The consumer is lost (as a server's restart of its own loses it):
	// three silent heartbeats later the feed makes it again.
	deleteConsumers(t, ctx, st)
	if err := q.PublishOutput("h1", id, "stdout", 5, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case m, ok := <-msgs:
		if !ok || string(m.Data) != "new\n" {
			t.Errorf("the resumed feed handed over %q (ok %v), want only the chunk after its id, %q", m.Data, ok, "new\n")
		}
	case <-time.After(45 * time.Second): // three silent heartbeats, 15 s, and the restart
		t.Error("nothing from the resumed feed in 45 s")
	}
}

// TestLiveFeedKeepsItsPlaceAtARestartOnTheSameStream: a feed that handed
// a chunk over and then lost its consumer, the stream kept, makes it
// again after that chunk and hands no LiveLost over: the message it
// reads back at its sequence (renewed, for a stream a whole cluster's
// restart made again with the old creation time) is the one it handed
// over, stored at the same time. A time read another way (the delivery's
// against the stored message's) would take every consumer restart for a
// lost stream.
func TestLiveFeedKeepsItsPlaceAtARestartOnTheSameStream(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	for i := range 3 { // another order's first: the order's chunk is not at sequence 1
		if err := q.PublishOutput("h1", uuid.New(), "stdout", int64(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.PublishOutput("h1", id, "stdout", 0, []byte("seen\n")); err != nil {
		t.Fatal(err)
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	take, st := followPastSeen(t, ctx, q, id)
	deleteConsumers(t, ctx, st)
	if err := q.PublishOutput("h1", id, "stdout", 5, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if m := take("the chunk after the restart"); m == queue.LiveLost || string(m.Data) != "new\n" {
		t.Errorf("after its consumer's restart on the same stream the feed handed over %q (LiveLost: %v), want %q",
			m.Data, m == queue.LiveLost, "new\n")
	}
}

// TestLiveResumedAfterAnIDOfALostStream: Live resumed after an event id
// the new stream has not reached (one an SSE client kept from before a
// NATS restart, given to another replica) reads the remade stream from
// its start: every id of a stream is at most its last sequence, so a
// larger one is of a stream that is gone. It waited for the new
// stream's sequence to pass the old id, and handed nothing over until.
// It hands LiveLost over first, as a feed that finds its stream made
// again does: what the order printed between the client's id and the new
// stream is lost, and the feed read the new stream from its start
// without a word of it (the SSE stream sent no "interrupted": a client
// resuming across serve's restart, which its order's output did not
// reach again, was never told its live output had a hole).
func TestLiveResumedAfterAnIDOfALostStream(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "queue-test", queue.Options{})
	nc, ctx := q.Conn(), testenv.Context(t)
	id := uuid.New()
	publishChunks(t, q, "h1", uuid.New(), 200, 10) // the other orders' traffic
	publishChunks(t, q, "h1", id, 1, 5)
	lastID := liveStored(t, ctx, q, 201) // the client's Last-Event-ID

	restartedAndMadeAgain(t, ctx, ns, q) // an API makes the stream again
	if err := q.PublishOutput("h1", id, "stdout", 5, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	feed, err := q.Live(ctx, "h1", id, lastID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feed.Stop)
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a bound: the message is stored
	defer cancel()
	m, err := feed.Next(nctx)
	if err != nil || m != queue.LiveLost {
		t.Fatalf("resumed after id %d of the lost stream: %v (%q), want LiveLost first", lastID, err, messageData(m))
	}
	m, err = feed.Next(nctx)
	if err != nil || m == queue.LiveLost || string(m.Data) != "after\n" {
		t.Fatalf("resumed after id %d of the lost stream, after LiveLost: %v (%q), want the chunk %q", lastID, err, messageData(m), "after\n")
	}
}

// messageData is m's body, or nothing for no message.
func messageData(m *nats.Msg) []byte {
	if m == nil {
		return nil
	}
	return m.Data
}

// deleteConsumers deletes every consumer of st, as a server's restart of
// its own loses them.
func deleteConsumers(t *testing.T, ctx context.Context, st jetstream.Stream) {
	t.Helper()
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		if err := st.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
}

// followPastSeen follows order id on h1 from its start and takes its
// first chunk, "seen\n": it returns what takes the feed's next message
// (failing after 45 s: three silent heartbeats and the restart) and the
// live stream.
func followPastSeen(t *testing.T, ctx context.Context, q *queue.Queue, id uuid.UUID) (func(what string) *nats.Msg, jetstream.Stream) {
	t.Helper()
	feed, err := q.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feed.Stop)
	msgs := feed.Messages(ctx)
	take := func(what string) *nats.Msg {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("the feed ended waiting for %s", what)
			}
			return m
		case <-time.After(45 * time.Second):
			t.Fatalf("no %s in 45 s", what)
		}
		return nil
	}
	if m := take("the order's chunk"); m == queue.LiveLost || string(m.Data) != "seen\n" {
		t.Fatalf("the feed handed over %q, want %q", m.Data, "seen\n")
	}
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	return take, st
}
