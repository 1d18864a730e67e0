package main

import (
	"testing"
	"time"
)

// TestLogThrottle: a repeated line passes once per interval, with the
// count of those held back; another key is not held by it.
func TestLogThrottle(t *testing.T) {
	l := &logThrottle{every: 50 * time.Millisecond}
	if n, ok := l.let("a"); !ok || n != 0 {
		t.Fatalf("first: %d %v", n, ok)
	}
	for range 5 {
		if _, ok := l.let("a"); ok {
			t.Fatal("a repeat within the interval passed")
		}
	}
	if _, ok := l.let("b"); !ok {
		t.Fatal("another line was held")
	}
	time.Sleep(60 * time.Millisecond)
	if n, ok := l.let("a"); !ok || n != 5 {
		t.Fatalf("after the interval: %d held, passed %v; want 5, true", n, ok)
	}
}
