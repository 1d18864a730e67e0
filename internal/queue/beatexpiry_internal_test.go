package queue

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// expiringRead is the hosts bucket whose first read of an entry under
// key returns the entry and then waits until the server has removed it
// (the bucket's TTL): the removal lands between a heartbeat's read and
// its write, as it did once in a takeover (hB13).
type expiringRead struct {
	jetstream.KeyValue
	key    string
	waited atomic.Bool
	found  atomic.Bool
}

func (k *expiringRead) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := k.KeyValue.Get(ctx, key)
	if err != nil || key != k.key || !k.waited.CompareAndSwap(false, true) {
		return e, err
	}
	k.found.Store(true)
	for {
		if _, gerr := k.KeyValue.Get(ctx, key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return e, nil
		}
		select {
		case <-ctx.Done():
			return e, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestHeartbeatOverAnExpiringPredecessorIsWritten: a new holder's first
// heartbeat reads its predecessor's last one, which the bucket's TTL
// removes before the write naming its revision. The write failed (`key
// revision mismatch`, a WARN and a lease failure counted) though the
// new holder holds the lease and nobody else wrote; the heartbeat is
// now judged again on what is there and written.
func TestHeartbeatOverAnExpiringPredecessorIsWritten(t *testing.T) {
	nc, _ := embeddedJetStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	q, err := New(ctx, nc, Options{LeaseTTL: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	beat := func(instance string) HostInfo {
		return HostInfo{Host: "exp", Instance: instance, StartedAt: time.Now(), LastSeen: time.Now()}
	}
	a, err := q.AcquireLease(ctx, "exp", "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Beat(ctx, beat("A")); err != nil {
		t.Fatal(err)
	}
	// A gives the host up; B takes it while A's heartbeat is still there.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := q.AcquireLease(ctx, "exp", "B", nil)
	if err != nil {
		t.Fatal(err)
	}
	// B renews before it beats (its beat loop's order), so its lease
	// outlives A's heartbeat.
	time.Sleep(1500 * time.Millisecond)
	if _, err := b.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	slow := &expiringRead{KeyValue: q.kv, key: "info.exp"}
	q.kv = slow
	if err := b.Beat(ctx, beat("B")); err != nil {
		t.Errorf("the new holder's first heartbeat: %v", err)
	}
	if !slow.found.Load() {
		t.Fatal("the new holder's heartbeat did not read its predecessor's: the test's premise is gone")
	}
	e, err := slow.KeyValue.Get(ctx, "info.exp")
	if err != nil {
		t.Fatalf("the host's heartbeat: %v", err)
	}
	var h HostInfo
	if err := json.Unmarshal(e.Value(), &h); err != nil || h.Instance != "B" {
		t.Fatalf("the host's heartbeat names %q (%v), want B", h.Instance, err)
	}
	if _, err := b.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Beat(ctx, beat("B")); err != nil {
		t.Fatalf("the new holder's next heartbeat: %v", err)
	}
}
