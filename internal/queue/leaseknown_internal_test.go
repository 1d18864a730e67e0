package queue

import (
	"strconv"
	"sync"
	"testing"
)

// TestALeaseYieldedMarkSurvivesEveryChange: the mark a release left on a
// host's lease key for its owner (yielded) is kept by each way this
// process learns of the lease after it, and each fact learned is kept by
// the mark set and cleared. The facts were once merged by hand, field by
// field, with the mark carried beside them (docs/decisions.md, hD26).
func TestALeaseYieldedMarkSurvivesEveryChange(t *testing.T) {
	const host, me = "yl", "yl/a"
	key := "lease." + host
	k := NewMarkKey([]byte("the host's seed"))
	for _, tt := range []struct {
		name   string
		change func(q *Queue)
		want   leaseFacts
	}{
		{"a wait honours a value its key signed, with its revision", func(q *Queue) {
			seen := &leaseSeen{q: q, key: key, host: host, instance: me, k: k}
			if _, ok := seen.honours(leaseValue(key, me, 5, k), 6); !ok {
				t.Fatal("the signed value was not honoured")
			}
		}, knowsSigned | knowsCounted},
		{"a wait honours another instance's value", func(q *Queue) {
			seen := &leaseSeen{q: q, key: key, host: host, instance: me}
			if _, ok := seen.honours(leaseValue(key, "yl/b", 0, nil), 3); !ok {
				t.Fatal("the value was not honoured")
			}
		}, knowsHeld},
		{"PostgreSQL names another owner", func(q *Queue) { q.HeldElsewhere(host) }, knowsHeld},
		{"a take writes a signed value", func(q *Queue) { q.learnLease(host, knowsSigned|knowsCounted) }, knowsSigned | knowsCounted},
	} {
		q := &Queue{}
		q.yielded(host, me)
		tt.change(q)
		if got := q.knownLease(host); got.yielded != me || got.learned != tt.want {
			t.Errorf("%s after the yield: known %+v, want yielded %q and learned %b", tt.name, got, me, tt.want)
		}
		q.yielded(host, "")
		if got := q.knownLease(host); got.yielded != "" || got.learned != tt.want {
			t.Errorf("%s, the yield then cleared: known %+v, want learned %b kept", tt.name, got, tt.want)
		}
		q.yielded(host, me)
		if got := q.knownLease(host); got.yielded != me || got.learned != tt.want {
			t.Errorf("%s, then yielded again: known %+v, want learned %b kept", tt.name, got, tt.want)
		}
	}
}

// TestALeaseYieldedAndLearnedAtOnceKeepsBoth: a release's mark and what a
// wait learns, of the same host at the same moment (two instances of a
// host sharing a Queue), are both kept: each was read and stored whole,
// and one stored over the other.
func TestALeaseYieldedAndLearnedAtOnceKeepsBoth(t *testing.T) {
	q := &Queue{}
	lost := 0
	for i := range 20000 {
		host := "h" + strconv.Itoa(i)
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { <-start; q.yielded(host, "me") })
		wg.Go(func() { <-start; q.HeldElsewhere(host) })
		close(start)
		wg.Wait()
		if got := q.knownLease(host); got.yielded != "me" || !got.learned.has(knowsHeld) {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("of 20000 hosts yielded and held elsewhere at once, %d lost the one or the other", lost)
	}
}
