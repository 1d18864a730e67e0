package queue_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishAllocations counts an order's publish's allocations (the
// caller's goroutine, under Queue.Publish: the message, the request to
// the stream and its PubAck's read), against a real nats-server and its
// orders stream. At 96d3416a, with jetstream's PublishMsg (its PubAck
// read by json.Unmarshal), 27.7 per publish; read in place (pubAckOf),
// 16.0 (docs/decisions.md, hG25). 18: the measure and a margin.
func TestPublishAllocations(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	publish := func() {
		if _, err := q.Publish(ctx, "allocs-1", uuid.New()); err != nil {
			t.Fatal(err)
		}
	}
	publish() // what is made once: the reply subscription, the marks' host
	n, top := testenv.AllocsUnder(200, []string{"github.com/orderly-run/orderly/internal/queue.(*Queue).Publish"}, publish)
	t.Logf("%.1f allocations per publish; the top sites:\n%s", n, strings.Join(top, "\n"))
	if n > 18 {
		t.Errorf("%.1f allocations per publish, want at most 18", n)
	}
}
