package queue_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPublishEventAllocations: an order's started event takes at most 2
// allocations, its finished one (with the live stream's rollup and TTL
// headers) at most 7; encoded by json.Marshal they took 5 and 10 (the
// event boxed, the id's text, the copy returned; the subject took two,
// now one). The counts are 1 and 6 here (the subject; the headers); the
// bound leaves one for the in-process nats-server, which AllocsPerRun
// counts too: it is kept to its one allocation per message that nobody
// stores (ORDERLY_LIVE is deleted, so JetStream stores no event
// meanwhile), and the fewest of three measures counts.
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
		{"started", "running", 2},
		{"finished", "succeeded", 7},
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
		t.Logf("%s event: %.0f allocations", c.typ, fewest)
		if fewest > c.max {
			t.Errorf("%s event: %.0f allocations, want at most %.0f", c.typ, fewest, c.max)
		}
	}
}
