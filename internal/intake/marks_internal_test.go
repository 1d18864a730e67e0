package intake

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestMarksAreClearedInBatches: marks held before Run are cleared once it
// runs; a burst past markBatch is cleared in DELETEs of at most markBatch,
// every mark once and in order; what is held when Run ends is cleared
// before it returns, and nothing after.
func TestMarksAreClearedInBatches(t *testing.T) {
	var m marks
	var mu sync.Mutex
	var batches [][]uuid.UUID
	flush := func(b []uuid.UUID) {
		mu.Lock()
		batches = append(batches, b)
		mu.Unlock()
	}
	cleared := func() (n int, largest int, all []uuid.UUID) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range batches {
			n += len(b)
			largest = max(largest, len(b))
			all = append(all, b...)
		}
		return n, largest, all
	}
	var want []uuid.UUID
	add := func(k int) {
		for range k {
			id := uuid.New()
			want = append(want, id)
			m.add(id)
		}
	}
	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if got, _, _ := cleared(); got == n {
				return
			}
			if time.Now().After(deadline) {
				got, _, _ := cleared()
				t.Fatalf("%d marks cleared, want %d", got, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	add(3) // before Run: held
	time.Sleep(3 * markEvery)
	if n, _, _ := cleared(); n != 0 {
		t.Fatalf("%d marks cleared before Run", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.run(ctx, flush) }()
	waitFor(3)
	add(markBatch + 88)
	waitFor(3 + markBatch + 88)
	time.Sleep(3 * markEvery)
	if n, largest, _ := cleared(); n != 3+markBatch+88 || largest > markBatch {
		t.Fatalf("%d marks cleared, largest DELETE %d; want %d, at most %d", n, largest, 3+markBatch+88, markBatch)
	}
	add(5)
	cancel()
	<-done
	n, _, all := cleared()
	if n != len(want) {
		t.Fatalf("%d marks cleared when Run returned, want %d", n, len(want))
	}
	for i := range want {
		if all[i] != want[i] {
			t.Fatalf("mark %d cleared out of order", i)
		}
	}
	add(1) // after Run: held, never cleared
	time.Sleep(3 * markEvery)
	if n, _, _ := cleared(); n != len(want)-1 {
		t.Fatalf("a mark was cleared after Run returned")
	}
}

// TestLeftQueueDropsTheMarkAndCountsItCleared: an order read as past
// queued leaves the batch (no DELETE names it; a batch left empty sends
// none) and counts as cleared for the restore guard, as the DELETE did;
// an id the Service does not hold changes neither.
func TestLeftQueueDropsTheMarkAndCountsItCleared(t *testing.T) {
	s := &Service{}
	var mu sync.Mutex
	var batches [][]uuid.UUID
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.published.run(ctx, func(b []uuid.UUID) {
			mu.Lock()
			batches = append(batches, b)
			mu.Unlock()
		})
	}()
	defer func() { cancel(); <-done }()

	claimed, other := uuid.New(), uuid.New()
	s.published.add(claimed)
	s.published.add(other)
	s.LeftQueue(uuid.New())
	if s.restore.dirty.Load() {
		t.Fatal("an id the Service does not hold counted as cleared")
	}
	s.LeftQueue(claimed)
	if !s.restore.dirty.Load() {
		t.Fatal("a dropped mark did not count as cleared")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(batches)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the batch with the other order's mark was never sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	got := batches[0]
	mu.Unlock()
	if len(got) != 1 || got[0] != other {
		t.Fatalf("the batch is %v, want only the order nobody read as started (%s)", got, other)
	}

	s.restore.dirty.Store(false)
	s.published.add(claimed)
	s.LeftQueue(claimed)
	time.Sleep(3 * markEvery)
	mu.Lock()
	n := len(batches)
	mu.Unlock()
	if n != 1 || !s.restore.dirty.Load() {
		t.Fatalf("%d batches sent after a batch's only mark was dropped (want still 1), cleared %v", n, s.restore.dirty.Load())
	}
}

// TestAwaitedMarkIsSettledOnce: a mark its waiter read as past queued
// counts as cleared for the restore guard and is never held for a
// DELETE; one its waiter did not read so is held as Submit holds it;
// either settles once, and a zero Mark (nothing published) does nothing.
func TestAwaitedMarkIsSettledOnce(t *testing.T) {
	s := &Service{}
	left := &Mark{s: s, id: uuid.New()}
	if !left.Settle(true) || left.Settle(false) {
		t.Fatal("a mark settled other than once")
	}
	if !s.restore.dirty.Load() {
		t.Fatal("a mark its waiter read past queued did not count as cleared")
	}
	if held := s.published.take(markBacklog); len(held) != 0 {
		t.Fatalf("%d marks held after a mark read past queued, want none", len(held))
	}

	s.restore.dirty.Store(false)
	queued := &Mark{s: s, id: uuid.New()}
	want := queued.id
	queued.Settle(false)
	queued.Settle(false)
	queued.Settle(true)
	if s.restore.dirty.Load() {
		t.Fatal("a mark its waiter did not read past queued counted as cleared")
	}
	if held := s.published.take(markBacklog); len(held) != 1 || held[0] != want {
		t.Fatalf("marks held %v, want only %s", held, want)
	}
	var none Mark
	if none.Settle(true) {
		t.Fatal("a zero Mark had a mark to settle")
	}
	if s.restore.dirty.Load() {
		t.Fatal("a zero Mark counted as cleared")
	}
}
