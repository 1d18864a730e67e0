package queue_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestAckedIsTheMessageItNames: the first delivery of a consumer made past
// the message acked last is that message only when its sequence, and each
// of its stored time and order id that is known, are the acked one's. An
// acked message read from PostgreSQL (Worker.lastClaimed) has no stored
// time: its order id alone tells it from another message at the same
// sequence of a stream made again.
func TestAckedIsTheMessageItNames(t *testing.T) {
	stored := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	id, other := uuid.New(), uuid.New()
	for _, tt := range []struct {
		name   string
		acked  queue.Acked
		seq    uint64
		stored time.Time
		id     uuid.UUID
		want   bool
	}{
		{"all three the same", queue.Acked{Seq: 10, Stored: stored, ID: id}, 10, stored, id, true},
		{"another sequence", queue.Acked{Seq: 10, Stored: stored, ID: id}, 11, stored, id, false},
		{"stored at another time", queue.Acked{Seq: 10, Stored: stored, ID: id}, 10, stored.Add(time.Second), id, false},
		{"another order", queue.Acked{Seq: 10, Stored: stored, ID: id}, 10, stored, other, false},
		{"claimed last, the same order", queue.Acked{Seq: 10, ID: id}, 10, stored, id, true},
		{"claimed last, another order at its sequence", queue.Acked{Seq: 10, ID: id}, 10, stored, other, false},
		{"claimed last, a body that is no order id", queue.Acked{Seq: 10, ID: id}, 10, stored, uuid.Nil, false},
		{"acked, its order unknown", queue.Acked{Seq: 10, Stored: stored}, 10, stored, other, true},
		{"a sequence alone says nothing", queue.Acked{Seq: 10}, 10, stored, other, false},
		{"nothing acked", queue.Acked{}, 0, time.Time{}, uuid.Nil, false},
	} {
		if got := tt.acked.Is(tt.seq, tt.stored, tt.id); got != tt.want {
			t.Errorf("%s: Is = %v, want %v", tt.name, got, tt.want)
		}
	}
}
