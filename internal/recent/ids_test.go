package recent

import (
	"testing"

	"github.com/google/uuid"
)

// TestIDsForgetsTheOldestFirst: the last Kept distinct ids are kept, an id
// added twice counts once (its second add must not make a later eviction
// forget it while a ring slot still names it), and Nil is never kept.
func TestIDsForgetsTheOldestFirst(t *testing.T) {
	var s IDs
	first := uuid.New()
	s.Add(first)
	s.Add(first)
	s.Add(uuid.Nil)
	if !s.Has(first) || s.Has(uuid.Nil) {
		t.Fatalf("after adding: has first %v, has Nil %v", s.Has(first), s.Has(uuid.Nil))
	}
	ids := make([]uuid.UUID, Kept-1)
	for i := range ids {
		ids[i] = uuid.New()
		s.Add(ids[i])
	}
	if !s.Has(first) {
		t.Fatal("the first id forgotten with room for it still (added twice, counted twice)")
	}
	s.Add(uuid.New())
	if s.Has(first) || !s.Has(ids[0]) {
		t.Fatalf("past Kept: has first %v (want forgotten), has the second %v (want kept)", s.Has(first), s.Has(ids[0]))
	}
}
