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
