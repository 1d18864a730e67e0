package queue_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestClaimMarkCovers: a message is below a host's claim mark by its
// sequence and its store time both; a stream created again (deleted by
// hand) counts from 1, and its messages, stored after the mark, are not.
func TestClaimMarkCovers(t *testing.T) {
	at := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	m := queue.ClaimMark{Seq: 10, Stored: at}
	for _, c := range []struct {
		name   string
		seq    uint64
		stored time.Time
		want   bool
	}{
		{"the claimed message", 10, at, true},
		{"one before it", 3, at.Add(-time.Minute), true},
		{"one after it", 11, at.Add(time.Millisecond), false},
		{"a stream created again", 3, at.Add(time.Hour), false},
		{"no metadata", 0, time.Time{}, false},
	} {
		if got := m.Covers(c.seq, c.stored); got != c.want {
			t.Errorf("%s: Covers(%d, %s) = %v, want %v", c.name, c.seq, c.stored, got, c.want)
		}
	}
	if (queue.ClaimMark{}).Covers(1, at) {
		t.Error("no mark covers a message")
	}
}
