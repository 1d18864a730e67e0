package worker

import (
	"sync"

	"github.com/google/uuid"
)

// startedSet remembers the orders this worker instance has started, so that
// an order it claimed and then lost track of (an ambiguous commit: the
// claim committed but the answer never came) can be told apart from one it
// ran: the first is still to execute, the second must never run again. It
// keeps the most recent ones only; older orders cannot be redelivered to an
// instance still running.
type startedSet struct {
	mu   sync.Mutex
	ids  map[uuid.UUID]struct{}
	ring []uuid.UUID
	next int
}

const startedKept = 4096

func (s *startedSet) add(id uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[uuid.UUID]struct{}, startedKept)
		s.ring = make([]uuid.UUID, startedKept)
	}
	if old := s.ring[s.next]; old != uuid.Nil {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % startedKept
	s.ids[id] = struct{}{}
}

func (s *startedSet) has(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
