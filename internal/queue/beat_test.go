package queue_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestThawedHolderKeepsOffItsSuccessorsHeartbeat: a holder frozen between
// a renewal and its heartbeat (its lease expiring meanwhile, a standby
// taking the host) writes that heartbeat once thawed. It must not replace
// the new holder's, nor, stopping, remove it; the new holder's own
// heartbeats, over its predecessor's entry first, go on.
func TestThawedHolderKeepsOffItsSuccessorsHeartbeat(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 10 * time.Second})
	ctx := testenv.Context(t)
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	beatOf := func(instance string) queue.HostInfo {
		return queue.HostInfo{Host: "thaw", Instance: instance, StartedAt: time.Now(), LastSeen: time.Now()}
	}
	holderBeat := func() string {
		t.Helper()
		e, err := kv.Get(ctx, "info.thaw")
		if err != nil {
			t.Fatal(err)
		}
		var h queue.HostInfo
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			t.Fatal(err)
		}
		return h.Instance
	}
	// A holds the host and beats; A2 (a later tenure of A's kind: just
	// took the lease, not beaten yet) is the first heartbeat of a tenure.
	for _, c := range []struct {
		name       string
		beatsFirst bool
	}{{"frozen mid-tenure", true}, {"frozen before its first heartbeat", false}} {
		a, err := q.AcquireLease(ctx, "thaw", "A", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.beatsFirst {
			if err := a.Beat(ctx, beatOf("A")); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Renew(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// A freezes here; its lease expires and B takes the host.
		if err := kv.Delete(ctx, "lease.thaw"); err != nil {
			t.Fatal(err)
		}
		b, err := q.AcquireLease(ctx, "thaw", "B", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Beat(ctx, beatOf("B")); err != nil {
			t.Fatalf("%s: the new holder's first heartbeat: %v", c.name, err)
		}
		// Thawed, A writes the heartbeat it was about to, then stops.
		if err := a.Beat(ctx, beatOf("A")); !errors.Is(err, queue.ErrNotHolder) {
			t.Errorf("%s: the thawed holder's heartbeat: %v, want ErrNotHolder", c.name, err)
		}
		if got := holderBeat(); got != "B" {
			t.Fatalf("%s: the host's heartbeat names %s, want the new holder B", c.name, got)
		}
		if err := a.Offline(ctx); err != nil && c.beatsFirst {
			t.Logf("%s: the thawed holder's offline: %v", c.name, err)
		}
		if got := holderBeat(); got != "B" {
			t.Fatalf("%s: after the thawed holder stopped, the heartbeat names %s, want B", c.name, got)
		}
		// B goes on beating, and stops cleanly.
		if _, err := b.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Beat(ctx, beatOf("B")); err != nil {
			t.Fatalf("%s: the new holder's next heartbeat: %v", c.name, err)
		}
		if err := b.Offline(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if online, err := q.HostOnline(ctx, "thaw"); err != nil || online {
			t.Fatalf("%s: online %v (%v) after the holder stopped", c.name, online, err)
		}
	}
}

// TestThawedHolderWhoseHeartbeatExpiredWritesNone: a holder frozen
// between a renewal and its heartbeat past the lease, its own heartbeat
// expired too, wrote that heartbeat once thawed, as a new entry: the
// host showed online under a worker that no longer held it, for a
// heartbeat (before the standby that took the lease beat, and then the
// standby's heartbeat was refused until its next renewal). A heartbeat
// with no entry to update is written only while the lease is this
// worker's; a lease nobody took is taken again by the next renewal, and
// the heartbeat after it is written.
func TestThawedHolderWhoseHeartbeatExpiredWritesNone(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 10 * time.Second})
	ctx := testenv.Context(t)
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	beatOf := func(instance string) queue.HostInfo {
		return queue.HostInfo{Host: "exp", Instance: instance, StartedAt: time.Now(), LastSeen: time.Now()}
	}
	online := func() bool {
		t.Helper()
		on, err := q.HostOnline(ctx, "exp")
		if err != nil {
			t.Fatal(err)
		}
		return on
	}
	for _, taken := range []bool{true, false} {
		a, err := q.AcquireLease(ctx, "exp", "A", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Beat(ctx, beatOf("A")); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		// A freezes; its lease and its heartbeat expire.
		for _, key := range []string{"lease.exp", "info.exp"} {
			if err := kv.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		var b *queue.Lease
		if taken { // B takes the host, and has not beaten yet
			if b, err = q.AcquireLease(ctx, "exp", "B", nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Beat(ctx, beatOf("A")); !errors.Is(err, queue.ErrNotHolder) || online() {
			t.Fatalf("taken %v: the thawed holder's heartbeat: %v, want ErrNotHolder and not written", taken, err)
		}
		if !taken {
			if retaken, err := a.Renew(ctx); err != nil || !retaken {
				t.Fatalf("the thawed holder's renewal of a lease nobody took: %v %v", retaken, err)
			}
			if err := a.Beat(ctx, beatOf("A")); err != nil || !online() {
				t.Fatalf("the heartbeat after the lease was taken again: %v", err)
			}
			b = a
		} else if err := b.Beat(ctx, beatOf("B")); err != nil || !online() {
			t.Fatalf("the new holder's first heartbeat: %v", err)
		}
		if err := b.Offline(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRenewReportsALapseFirst: a renewal that finds the lease key gone
// or naming another worker calls the OnLapse hook before it tries to take
// the key again, so that the holder stops claiming while it does; one
// whose last answer was lost (the key still names it, at another
// revision) does not.
func TestRenewReportsALapseFirst(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 10 * time.Second})
	ctx := testenv.Context(t)
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		change  func() error
		lapse   bool
		retaken bool
		lost    bool
	}{
		{"renewed", func() error { return nil }, false, false, false},
		{"answer lost", func() error { _, err := kv.Put(ctx, "lease.lapse", []byte("A")); return err }, false, false, false},
		{"expired", func() error { return kv.Delete(ctx, "lease.lapse") }, true, true, false},
		{"taken", func() error { _, err := kv.Put(ctx, "lease.lapse", []byte("B")); return err }, true, false, true},
	} {
		a, err := q.AcquireLease(ctx, "lapse", "A", nil)
		if err != nil {
			t.Fatal(err)
		}
		var lapsed bool
		var keyThen string // what the key held when the hook ran
		a.OnLapse(func() {
			lapsed = true
			if e, err := kv.Get(ctx, "lease.lapse"); err == nil {
				keyThen = string(e.Value())
			}
		})
		if err := c.change(); err != nil {
			t.Fatal(err)
		}
		retaken, err := a.Renew(ctx)
		if lapsed != c.lapse || retaken != c.retaken || errors.Is(err, queue.ErrLeaseLost) != c.lost || (err != nil && !c.lost) {
			t.Errorf("%s: lapse reported %v, retaken %v, %v; want %v, %v, lost %v", c.name, lapsed, retaken, err, c.lapse, c.retaken, c.lost)
		}
		if keyThen == "A" {
			t.Errorf("%s: the lapse was reported after the key was taken again", c.name)
		}
		if err := kv.Delete(ctx, "lease.lapse"); err != nil {
			t.Fatal(err)
		}
	}
}
