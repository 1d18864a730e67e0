package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedMessages: Messages hands a feed's messages over in order on
// its channel, which closes once the feed is stopped, or its context
// ends, so a reader that also waits on other things sees its end.
func TestLiveFeedMessages(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	id := uuid.New()
	stdout, stderr := publishChunks(t, q, "h1", id, 4, 3)
	next := func(msgs <-chan *nats.Msg) (*nats.Msg, bool) {
		t.Helper()
		select {
		case m, ok := <-msgs:
			return m, ok
		case <-time.After(30 * time.Second):
			t.Fatal("nothing on the channel in 30 s")
			return nil, false
		}
	}

	for _, end := range []string{"stop", "context"} {
		ctx, cancel := context.WithCancel(testenv.Context(t))
		feed, err := q.Live(ctx, "h1", id, 0)
		if err != nil {
			t.Fatal(err)
		}
		msgs := feed.Messages(ctx)
		var got []byte
		for range 4 {
			m, ok := next(msgs)
			if !ok {
				t.Fatalf("%s: the channel closed after %q", end, got)
			}
			got = append(got, m.Data...)
		}
		if want := string(stdout[:3]) + string(stderr[:3]) + string(stdout[3:]) + string(stderr[3:]); string(got) != want {
			t.Errorf("%s: the feed's messages %q, want %q", end, got, want)
		}
		if end == "stop" {
			feed.Stop()
		} else {
			cancel()
		}
		if m, ok := next(msgs); ok {
			t.Errorf("%s: after the end the channel gave %q, want it closed", end, m.Data)
		}
		feed.Stop()
		cancel()
	}
}
