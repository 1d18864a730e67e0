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

// TestClaimMarkPassed: an order a database holds queued below the mark
// is behind what the host did when a later message was claimed, or when
// its own message was claimed again in a later attempt than the one the
// database holds (it was handed back before the backup); an order handed
// back and not claimed since holds the mark's attempt, and runs.
func TestClaimMarkPassed(t *testing.T) {
	at := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name    string
		mark    queue.ClaimMark
		seq     uint64
		attempt int
		want    bool
	}{
		{"never claimed, the claimed message", queue.ClaimMark{Seq: 10, Stored: at, Attempt: 1}, 10, 0, true},
		{"handed back, not claimed since", queue.ClaimMark{Seq: 10, Stored: at, Attempt: 1}, 10, 1, false},
		{"handed back, claimed again since", queue.ClaimMark{Seq: 10, Stored: at, Attempt: 2}, 10, 1, true},
		{"handed back, a later message claimed since", queue.ClaimMark{Seq: 12, Stored: at, Attempt: 1}, 10, 1, true},
		{"never claimed, a later message claimed", queue.ClaimMark{Seq: 12, Stored: at, Attempt: 1}, 10, 0, true},
		{"an older worker's mark, never claimed", queue.ClaimMark{Seq: 10, Stored: at}, 10, 0, true},
		{"an older worker's mark, handed back", queue.ClaimMark{Seq: 10, Stored: at}, 10, 1, false},
		{"a message after the mark", queue.ClaimMark{Seq: 10, Stored: at, Attempt: 3}, 11, 0, false},
	} {
		if got := c.mark.Passed(c.seq, at, c.attempt); got != c.want {
			t.Errorf("%s: %+v.Passed(%d, attempt %d) = %v, want %v", c.name, c.mark, c.seq, c.attempt, got, c.want)
		}
	}
	m := queue.ClaimMark{Seq: 10, Stored: at, Attempt: 1}
	if !(queue.ClaimMark{Seq: 10, Stored: at, Attempt: 2}).After(m) || !(queue.ClaimMark{Seq: 11}).After(m) || (queue.ClaimMark{Seq: 9, Attempt: 5}).After(m) || m.After(m) {
		t.Error("After orders marks by sequence, then attempt")
	}
}
