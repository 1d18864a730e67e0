package postgres_test

import (
	"testing"

	"github.com/google/uuid"
)

// TestLastClaimed: the sequence a consumer the server lost is made again
// at (worker.Worker.lastClaimed) is that of the host's newest order, by
// id, that a worker claimed, whatever was queued after it or claimed on
// another host; an older order claimed at a higher sequence (published
// later) does not move it up, which only has more delivered again. None
// claimed: 0.
func TestLastClaimed(t *testing.T) {
	e := newStoreEnv(t)
	if seq, id, err := e.store.LastClaimed(e.ctx, "lc1"); err != nil || seq != 0 || id != uuid.Nil {
		t.Fatalf("no order claimed: %d %s %v, want 0", seq, id, err)
	}
	older := e.insert("lc1", "alice", nil)
	newer := e.insert("lc1", "alice", nil)
	e.insert("lc1", "alice", nil) // queued: never claimed
	other := e.insert("lc2", "alice", nil)
	e.own("lc1", "w1")
	e.own("lc2", "w2")
	for _, c := range []struct {
		id     uuid.UUID
		worker string
		seq    uint64
	}{{newer.ID, "w1", 7}, {older.ID, "w1", 9}, {other.ID, "w2", 100}} {
		if _, claimed, err := e.store.Claim(e.ctx, c.id, c.worker, c.seq); err != nil || !claimed {
			t.Fatalf("claim %s: %v %v", c.id, claimed, err)
		}
	}
	if seq, id, err := e.store.LastClaimed(e.ctx, "lc1"); err != nil || seq != 7 || id != newer.ID {
		t.Fatalf("last claimed of lc1: %d %s %v, want 7 %s", seq, id, err, newer.ID)
	}
}
