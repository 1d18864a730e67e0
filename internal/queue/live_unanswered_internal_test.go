package queue

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// unansweredStream is JetStream whose first Stream request after armed
// is set goes unanswered: it waits until its context ends, as a request
// sent while the connection comes back after a NATS restart can.
type unansweredStream struct {
	jetstream.JetStream
	armed atomic.Bool
}

func (j *unansweredStream) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	if j.armed.CompareAndSwap(true, false) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return j.JetStream.Stream(ctx, name)
}

// TestLiveRestartOutlivesAnUnansweredRequest: a live feed whose consumer
// was lost makes it again, trying every second; but each try's requests
// had only the follower's context for a bound, and a request that went
// unanswered (TestLiveFeedReadsAStreamMadeAgain waited out its two
// minutes so after a NATS restart, once in six runs) held the feed until
// that context ended: a follower whose context has a deadline (the
// test's) got nothing more live. Each try now has its own bound.
func TestLiveRestartOutlivesAnUnansweredRequest(t *testing.T) {
	nc, _ := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	q, err := New(ctx, nc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lossy := &unansweredStream{JetStream: q.js}
	q.js = lossy
	id := uuid.New()
	f, err := q.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	lossy.armed.Store(true)
	start := time.Now()
	if _, err := f.restart(ctx); err != nil {
		t.Fatalf("the feed's restart after an unanswered request: %v (after %s)", err, time.Since(start).Round(time.Second))
	}
	if err := q.PublishOutput("h1", id, "stdout", 0, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	m, err := f.Next(ctx)
	if err != nil || string(m.Data) != "after\n" {
		t.Fatalf("after the restart: %v, want the chunk %q", err, "after\n")
	}
}
