package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedAfterItsStreamIsMadeAgain: a feed whose live stream a NATS
// restart lost hands over LiveLost once it finds the stream made again,
// whether it made it itself or another API did (a queue.New), and then
// the new stream's messages from its first: their sequences start again,
// below the last one the feed handed over. Before, the feed said nothing
// and went on after that sequence, skipping the new stream's first
// messages (here the order's only one).
func TestLiveFeedAfterItsStreamIsMadeAgain(t *testing.T) {
	for _, by := range []string{"the feed", "another API"} {
		t.Run(by, func(t *testing.T) {
			ns := testenv.NATSServer(t, &server.Options{})
			q := testenv.Queue(t, ns.ClientURL(), "live-lost-test", queue.Options{})
			id := uuid.New()
			publishChunks(t, q, "h1", uuid.New(), 6, 3) // another order's, before
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
			take := func(what string) *nats.Msg {
				t.Helper()
				select {
				case m, ok := <-next:
					if !ok {
						t.Fatalf("the feed ended waiting for %s", what)
					}
					return m
				case <-time.After(time.Minute):
					t.Fatalf("no %s in a minute", what)
				}
				return nil
			}
			for i := range 2 {
				if m := take("the order's chunk"); m == queue.LiveLost {
					t.Fatalf("chunk %d: LiveLost", i)
				}
			}

			testenv.NATSServerRestarted(t, ns)
			after := q
			if by == "another API" {
				// It makes the streams as it starts, before the feed
				// finds its consumer gone.
				after = testenv.Queue(t, ns.ClientURL(), "live-lost-other", queue.Options{})
				publish(t, after, id, "after")
			}
			if m := take("LiveLost"); m != queue.LiveLost {
				t.Fatalf("after the restart the feed handed over %q, want LiveLost", m.Data)
			}
			if by == "the feed" {
				publish(t, after, id, "after")
			}
			if m := take("the chunk published after the restart"); m == queue.LiveLost || string(m.Data) != "after" {
				t.Errorf("then %q, want the chunk published after the restart", m.Data)
			}
		})
	}
}

// publish sends one stdout chunk of order id of h1 and waits until the
// server has it.
func publish(t *testing.T, q *queue.Queue, id uuid.UUID, data string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if q.PublishOutput("h1", id, "stdout", 100, []byte(data)) == nil && q.Conn().FlushWithContext(ctx) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("could not publish after the restart")
}

// TestLiveAfterARestartThatNoFeedSaw: a follower that comes after a NATS
// restart lost ORDERLY_LIVE, with no feed open across it to make the
// stream again (no order followed at that moment), gets a feed: Live
// makes the stream as a feed's restart does, on a queue that may create
// streams, and the order's chunks published after come live. Before,
// Live failed, stream not found (the SSE stream answered 503 "live
// events unavailable", and every follow fell back to polling) until an
// API process started, and the workers' chunks went nowhere meanwhile.
// A follower resuming after an id of the lost stream gets LiveLost
// first.
func TestLiveAfterARestartThatNoFeedSaw(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resumed bool
	}{{"from the start", false}, {"resumed after an id of the lost stream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NATSServer(t, &server.Options{})
			q := testenv.Queue(t, ns.ClientURL(), "live-nofeed-test", queue.Options{})
			ctx := testenv.Context(t)
			id := uuid.New()
			publishChunks(t, q, "h1", id, 3, 3)
			after := uint64(0)
			if tc.resumed {
				after = liveStored(t, ctx, q, 3)
			}

			testenv.NATSServerRestarted(t, ns)
			// Connected again, and JetStream answers: the orders
			// stream (on disk) is there, the live one (in memory) not.
			for {
				// Each try bounded: a request sent as the connection
				// came back may go unanswered.
				tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := q.JetStream().Stream(tctx, queue.OrdersStream)
				cancel()
				if err == nil {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("JetStream did not answer after the restart: %v", err)
				case <-time.After(100 * time.Millisecond):
				}
			}
			if _, err := q.JetStream().Stream(ctx, queue.LiveStream); err == nil {
				t.Fatal("the live stream outlived the restart: nothing to test")
			}
			feed, err := q.Live(ctx, "h1", id, after)
			if err != nil {
				t.Fatalf("Live after the restart: %v", err)
			}
			defer feed.Stop()
			publish(t, q, id, "after")
			nctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a bound: the chunk is stored
			defer cancel()
			m, err := feed.Next(nctx)
			if tc.resumed {
				if err != nil || m != queue.LiveLost {
					t.Fatalf("resumed after id %d of the lost stream: %v, want LiveLost first", after, err)
				}
				m, err = feed.Next(nctx)
			}
			if err != nil || m == queue.LiveLost || string(m.Data) != "after" {
				t.Fatalf("the feed handed over %v (%v), want the chunk published after the restart", m, err)
			}
		})
	}
}
