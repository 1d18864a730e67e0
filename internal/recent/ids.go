// Package recent keeps the most recent of a stream of ids: a bounded set
// for "have I seen this one lately", where older ids cannot come again.
package recent

import (
	"sync"

	"github.com/google/uuid"
)

// Kept is how many ids an IDs remembers.
const Kept = 4096

// IDs remembers the last Kept distinct ids added; the oldest are forgotten
// first. The zero value is ready to use and safe for concurrent use.
type IDs struct {
	mu   sync.Mutex
	ids  map[uuid.UUID]struct{}
	ring [Kept]uuid.UUID
	next int
}

// Add remembers id (uuid.Nil is ignored). Adding an id it has does not
// make it any newer.
func (s *IDs) Add(id uuid.UUID) {
	if id == uuid.Nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = make(map[uuid.UUID]struct{}, Kept)
	}
	if _, ok := s.ids[id]; ok {
		return
	}
	delete(s.ids, s.ring[s.next])
	s.ring[s.next] = id
	s.ids[id] = struct{}{}
	s.next = (s.next + 1) % Kept
}

// Has reports whether id is remembered.
func (s *IDs) Has(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}
