package api

import (
	"testing"
	"time"
)

// TestUISessionsPerPrincipal: one principal signing in again and again
// ends its own oldest sessions, never another principal's; the store's
// overall cap still holds.
func TestUISessionsPerPrincipal(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newUISessions(func() time.Time { now = now.Add(time.Millisecond); return now })
	s.cap, s.perPrincipal = 10, 3
	adminID, _ := s.create("admin-token", "admin")
	var alice []string
	for range 20 {
		id, _ := s.create("alice-token", "alice")
		alice = append(alice, id)
	}
	if s.get(adminID) == nil {
		t.Fatal("alice's sign-ins ended the admin's session")
	}
	for i, id := range alice {
		if live := s.get(id) != nil; live != (i >= len(alice)-3) {
			t.Errorf("alice's session %d live=%v; want only her last 3", i, live)
		}
	}
	for i := range 12 {
		s.create("t", "p"+string(rune('a'+i)))
	}
	if n := len(s.byID); n > s.cap {
		t.Errorf("%d sessions, cap %d", n, s.cap)
	}
}

// TestUISessionEndsItsStreams: a session that ends, by sign-out or by
// expiry, closes out (the live streams it opened end); one kept busy by
// an open stream (touch) does not go idle.
func TestUISessionEndsItsStreams(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := newUISessions(func() time.Time { return now })
	ended := func(sess *uiSession) bool {
		select {
		case <-sess.out:
			return true
		default:
			return false
		}
	}
	outID, out := s.create("t", "alice")
	_, idle := s.create("t", "bob")
	busyID, busy := s.create("t", "carol")
	s.drop(outID)
	if !ended(out) {
		t.Error("sign-out did not end the session's streams")
	}
	for range 3 {
		now = now.Add(30 * time.Minute)
		s.touch(busy) // its stream is open
	}
	s.pruneLocked(now)
	if !ended(idle) {
		t.Error("a session idle for 90 minutes did not end its streams")
	}
	if ended(busy) || s.get(busyID) == nil {
		t.Error("a session with an open stream went idle")
	}
}

// TestUISessionEndsAtItsMaximumLifetime: a session whose stream keeps it
// busy still ends at its maximum lifetime (twelve hours), and its streams
// with it. Before, only a request with the session or a new sign-in
// looked at its age, so a stream opened in the eleventh hour ran on to
// its order's end.
func TestUISessionEndsAtItsMaximumLifetime(t *testing.T) {
	s := newUISessions(time.Now)
	s.max = 50 * time.Millisecond
	_, sess := s.create("t", "alice")
	select {
	case <-sess.out:
	case <-time.After(10 * time.Second):
		t.Fatal("the session outlived its maximum lifetime")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) != 0 {
		t.Errorf("%d sessions left in the store", len(s.byID))
	}
}
