package queue_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishEventAllocations: an order's started event takes at most 3
// allocations, its finished one (with the live stream's rollup and TTL
// headers) at most 8; encoded by json.Marshal they took 5 and 10 (the
// event boxed, the id's text, the copy returned). The counts are 2 and 7
// here; the bound leaves one for the in-process nats-server, which
// AllocsPerRun counts too: it is kept to its one allocation per message
// that nobody stores (ORDERLY_LIVE is deleted, so JetStream does not
// store the events meanwhile), and the fewest of three measures counts.
func TestPublishEventAllocations(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	if err := q.JetStream().DeleteStream(testenv.Context(t), queue.LiveStream); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	for _, c := range []struct {
		typ, status string
		max         float64
	}{
		{"started", "running", 3},
		{"finished", "succeeded", 8},
	} {
		ev := queue.Event{OrderID: id, Type: c.typ, Status: c.status, Host: "web1"}
		fewest := -1.0
		for range 3 {
			n := testing.AllocsPerRun(200, func() {
				if err := q.PublishEvent(ev); err != nil {
					t.Fatal(err)
				}
			})
			if fewest < 0 || n < fewest {
				fewest = n
			}
		}
		if fewest > c.max {
			t.Errorf("%s event: %.0f allocations, want at most %.0f", c.typ, fewest, c.max)
		}
	}
}
