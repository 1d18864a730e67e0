package queue_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStandbyWakesOnTheLeasesExpiryMarker: a holder that stops renewing
// (dead) leaves its lease to expire; the standby takes it on the
// server's marker of that expiry, not at a periodic try. Without markers
// an expired key left no trace and the standby found it gone up to a
// quarter lease later, the host offline meanwhile. The standby starts
// waiting half a lease after the holder's last renewal, so that its
// periodic try (every lease, with markers) falls half a lease after the
// expiry. The lease is long enough that a stall of a loaded machine (up to
// half of it) moves neither past the other.
func TestStandbyWakesOnTheLeasesExpiryMarker(t *testing.T) {
	const ttl = 8 * time.Second
	q, _ := openQueue(t, queue.Options{LeaseTTL: ttl})
	ctx := testenv.Context(t)
	if _, err := q.AcquireLease(ctx, "m1", "A", nil); err != nil {
		t.Fatal(err)
	}
	renewed := time.Now()
	time.Sleep(ttl / 2)
	b, err := q.AcquireLease(ctx, "m1", "B", func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B took the lease %v after A's last renewal (lease %v)", time.Since(renewed), ttl)
	if b.Freed() != "expired" {
		t.Fatalf("B found the lease free by %q, want on its expiry marker (\"expired\")", b.Freed())
	}
}

// TestHostsBucketGetsMarkersOnUpgrade: a hosts bucket an orderly from
// before expiry markers made is updated in place, keeping its keys.
func TestHostsBucketGetsMarkersOnUpgrade(t *testing.T) {
	_, nc := openQueue(t, queue.Options{LeaseTTL: 2 * time.Second})
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, queue.HostsBucket); err != nil {
		t.Fatal(err)
	}
	old, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket, TTL: 15 * time.Second, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Create(ctx, "lease.u1", []byte("A")); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.New(ctx, nc, queue.Options{LeaseTTL: 15 * time.Second}); err != nil {
		t.Fatal(err)
	}
	st, err := old.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LimitMarkerTTL() != 15*time.Second {
		t.Fatalf("the updated bucket's marker TTL %v, want the lease's", st.LimitMarkerTTL())
	}
	if e, err := old.Get(ctx, "lease.u1"); err != nil || string(e.Value()) != "A" {
		t.Fatalf("the lease kept across the update: %v", err)
	}
}
