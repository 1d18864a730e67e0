package queue_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedMadeAgainAtTheDropNotAfterItsSilence: a follower's feed
// across a nats-server restart, which loses its consumer (and the live
// stream, both in memory), makes the consumer again when its connection
// drops: it hands over LiveLost and then what the order prints next
// within seconds of the restart. Before, it heard nothing until its
// three heartbeats of silence, 15 s, and the order's output was held
// back from its followers that long after each restart (hD22 in
// docs/decisions.md). Bounded at 10 s here, two thirds of the silence.
func TestLiveFeedMadeAgainAtTheDropNotAfterItsSilence(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "live-drop-test", queue.Options{})
	id := uuid.New()
	publishChunks(t, q, "h1", id, 2, 3)
	ctx := testenv.Context(t)
	feed, err := q.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Stop()
	next := make(chan *nats.Msg, 4)
	go func() {
		for {
			m, err := feed.Next(ctx)
			if err != nil {
				close(next)
				return
			}
			next <- m
		}
	}()
	take := func(what string, within time.Duration) *nats.Msg {
		t.Helper()
		select {
		case m, ok := <-next:
			if !ok {
				t.Fatalf("the feed ended waiting for %s", what)
			}
			return m
		case <-time.After(within):
			t.Fatalf("no %s within %s", what, within)
		}
		return nil
	}
	for i := range 2 {
		if m := take("the order's chunk", time.Minute); m == queue.LiveLost {
			t.Fatalf("chunk %d: LiveLost", i)
		}
	}

	testenv.NATSServerRestarted(t, ns)
	back := time.Now()
	if m := take("LiveLost after the restart", 10*time.Second); m != queue.LiveLost {
		t.Fatalf("after the restart the feed handed over %q, want LiveLost", m.Data)
	}
	t.Logf("LiveLost %s after the server was back", time.Since(back).Round(time.Millisecond))
	publish(t, q, id, "after")
	if m := take("the chunk published after the restart", 10*time.Second); m == queue.LiveLost || string(m.Data) != "after" {
		t.Errorf("then %q, want the chunk published after the restart", m.Data)
	}
}
