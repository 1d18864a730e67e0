package postgres

import (
	"net"
	"testing"
	"time"
)

// TestInsertWatchCutsAfterTwoEpochs: an insert's connection is closed at
// the end of the epoch after the one it was sent in, not before; one
// whose answer came is left alone; done reports a connection the watch
// closed, which must not go back to the pool. The epochs are ended by
// hand (the timer's period is an hour).
func TestInsertWatchCutsAfterTwoEpochs(t *testing.T) {
	epoch := InsertEpoch
	InsertEpoch = time.Hour
	t.Cleanup(func() { InsertEpoch = epoch })
	var w insertWatch
	t.Cleanup(func() { w.timer.Stop() })
	pipe := func() (net.Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now()) // a pipe's read of an open end times out
		_, err := c.Read(make([]byte, 1))
		return err != nil && !isTimeout(err)
	}
	first, firstPeer := pipe()
	answered, _ := pipe()
	w.sent(first)
	w.sent(answered)
	w.tick()
	if closed(firstPeer) {
		t.Fatal("an insert cut at the end of the epoch it was sent in")
	}
	if w.done(answered) {
		t.Fatal("an insert answered within its bound reported cut")
	}
	second, secondPeer := pipe()
	w.sent(second)
	w.tick()
	if !closed(firstPeer) {
		t.Fatal("an insert out for two epochs left open")
	}
	if closed(secondPeer) {
		t.Fatal("an insert sent in the epoch that just ended cut")
	}
	if !w.done(first) || w.done(second) {
		t.Fatal("done does not report the cut connection alone")
	}
	if len(w.out) != 0 {
		t.Fatalf("%d inserts still out", len(w.out))
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
