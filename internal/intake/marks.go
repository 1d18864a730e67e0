package intake

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

const (
	markEvery   = 50 * time.Millisecond // how long a publish mark waits for others to share its DELETE
	markBatch   = 512                   // marks cleared by one DELETE
	markBacklog = 4096                  // marks held at most; past it one is dropped
)

// marks collects the orders published since the last DELETE of their
// publish marks, for one DELETE per markEvery. A timer armed by the first
// mark of a batch runs the DELETE: no goroutine is woken per order and none
// while nothing was published. (It was a goroutine fed by a channel, woken
// by every order and by a 50 ms ticker even when idle: 1.7 goroutine
// wake-ups per synchronous order, docs/benchmarks.md, "Serve's hand-offs per
// order, counted".) A mark is an optimization: one dropped costs a
// deduplicated republish by the reconciler.
type marks struct {
	mu    sync.Mutex
	ids   []uuid.UUID
	timer *time.Timer // while Run runs; nil before and after
	flush func([]uuid.UUID)
	every time.Duration // 0: markEvery

	flushing sync.Mutex // one DELETE at a time, in the order the marks came
}

// add holds id for the next DELETE.
func (m *marks) add(id uuid.UUID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ids) >= markBacklog {
		return
	}
	m.ids = append(m.ids, id)
	if m.timer == nil {
		return // Run is not running: held for it
	}
	switch len(m.ids) {
	case 1:
		m.timer.Reset(m.wait())
	case markBatch:
		m.timer.Reset(0)
	}
}

// wait is how long a first mark waits for others (every, or markEvery).
func (m *marks) wait() time.Duration {
	if m.every > 0 {
		return m.every
	}
	return markEvery
}

// drop forgets id when it is held, newest first (the order a waiter read
// as started was published moments ago), and reports whether it was:
// its mark needs no DELETE (Service.LeftQueue). With none left held, the
// timer is stopped: a batch it would fire is empty.
func (m *marks) drop(id uuid.UUID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.ids) - 1; i >= 0; i-- {
		if m.ids[i] != id {
			continue
		}
		m.ids = slices.Delete(m.ids, i, i+1)
		if len(m.ids) == 0 && m.timer != nil {
			m.timer.Stop()
		}
		return true
	}
	return false
}

// take removes up to n held marks, the oldest first.
func (m *marks) take(n int) []uuid.UUID {
	m.mu.Lock()
	defer m.mu.Unlock()
	n = min(n, len(m.ids))
	batch := append([]uuid.UUID(nil), m.ids[:n]...)
	m.ids = append(m.ids[:0], m.ids[n:]...)
	return batch
}

// fire is the timer's: one DELETE of up to markBatch marks, and the timer
// armed again for what is left.
func (m *marks) fire() {
	m.mu.Lock()
	flush := m.flush
	m.mu.Unlock()
	m.flushing.Lock()
	if batch := m.take(markBatch); len(batch) > 0 {
		flush(batch)
	}
	m.flushing.Unlock()
	m.mu.Lock()
	if m.timer != nil && len(m.ids) > 0 {
		if len(m.ids) >= markBatch {
			m.timer.Reset(0)
		} else {
			m.timer.Reset(m.wait())
		}
	}
	m.mu.Unlock()
}

// run clears the marks until ctx ends, then clears what is held.
func (m *marks) run(ctx context.Context, flush func([]uuid.UUID)) {
	m.mu.Lock()
	m.flush = flush
	m.timer = time.AfterFunc(m.wait(), m.fire)
	if len(m.ids) == 0 {
		m.timer.Stop()
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	m.timer.Stop()
	m.timer = nil
	m.mu.Unlock()
	m.flushing.Lock() // after a DELETE under way
	defer m.flushing.Unlock()
	if batch := m.take(markBacklog); len(batch) > 0 {
		flush(batch)
	}
}

// LeftQueue tells the Service that order id was read from PostgreSQL as
// no longer queued. Its publish mark is gone or going without the DELETE
// the Service holds it for: a claim deletes the mark of the order it takes
// in its own transaction (migration 00020), and ForgetStarted deletes the
// mark of an order that ended while queued. On the synchronous path the
// worker claims an order within milliseconds of its publish and the
// waiter reads it finished before the batch is due, so that DELETE
// deleted nothing: a statement PostgreSQL planned at each call, a round
// trip and a commit, most of a batch's cost for nothing. Dropped, the mark
// still counts as cleared, as the DELETE's did: the restore guard raises
// the publish generation, so that a backup taken before the claim is
// found behind (restore.go). An id this Service does not hold (another
// replica published it, or its batch is under way) changes nothing.
func (s *Service) LeftQueue(id uuid.UUID) {
	if s == nil {
		return
	}
	if s.published.drop(id) {
		s.cleared()
	}
}

// Mark is the publish mark of an order SubmitAwaited published, held by
// the caller that waits for the order.
type Mark struct {
	s  *Service
	id uuid.UUID
}

// Settle ends the caller's hold of the mark, once: with left, when its
// wait first reads the order past queued (its claim, or its end while
// queued, deleted the mark), which counts as cleared at the moment
// LeftQueue's drop did; without, when the wait ended without such a
// read, and the mark is then held for the next batch's DELETE, as Submit
// holds it. It reports whether there was a mark to settle: a nil or zero
// Mark, or one settled before, has none.
func (m *Mark) Settle(left bool) bool {
	if m == nil || m.id == uuid.Nil {
		return false
	}
	if left {
		m.s.cleared()
	} else {
		m.s.published.add(m.id)
	}
	m.id = uuid.Nil
	return true
}
