package api

import (
	"sync"

	"github.com/google/uuid"
)

// takenCap is how many submissions takenUp remembers: well above what the
// intake holds at once (its lanes and their backlog).
const takenCap = 4096

// takenUp remembers, by order id (submissionID), the NATS submissions this
// replica counted against their principal's rate limit or refused with a
// row in rejections. The intake consumer's state is in memory on a single
// nats-server, so a restart of the server loses it, and the submissions it
// held come again as first deliveries (NumDelivered 1): without this, one
// this replica had counted was counted a second time, and one whose
// refusal it had recorded but not acknowledged kept that row beside the
// new decision. Remembered, such a submission is taken up as a redelivery
// (delivery.counted): not counted again, its earlier refusal withdrawn
// (Retake) and its recorded order found first. Another replica pinned
// after the restart does not know it (as before). The oldest are
// forgotten first; an acknowledged submission never comes again, and a
// stream created again numbers new submissions anew but stamps them
// later, so their ids differ.
type takenUp struct {
	mu   sync.Mutex
	ids  map[uuid.UUID]struct{}
	ring [takenCap]uuid.UUID
	next int
}

// add remembers id.
func (t *takenUp) add(id uuid.UUID) {
	if id == uuid.Nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ids == nil {
		t.ids = make(map[uuid.UUID]struct{}, takenCap)
	}
	if _, ok := t.ids[id]; ok {
		return
	}
	delete(t.ids, t.ring[t.next])
	t.ring[t.next] = id
	t.ids[id] = struct{}{}
	t.next = (t.next + 1) % takenCap
}

// has reports whether id is remembered.
func (t *takenUp) has(id uuid.UUID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.ids[id]
	return ok
}
