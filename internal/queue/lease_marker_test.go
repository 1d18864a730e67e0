package queue_test

import (
	"context"

	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStandbyTakesTheLeaseAtItsExpiry: a holder that stops renewing
// (dead) leaves its lease to expire; the standby takes it at the end of
// the lease timed from when the server stored the holder's last renewal
// ("expired"), not at a periodic try ("tried"). The hosts bucket has no
// expiry markers to wake it (it takes no rollups, which any worker's
// credential could purge it with); before them an expired key left no
// trace and the standby found it gone up to a quarter lease later, the
// host offline meanwhile. The standby starts waiting half a lease after
// the holder's last renewal, so that it reads the key half a lease
// before its expiry. The lease is long enough that a stall of a loaded
// machine (up to half of it) moves neither past the other.
func TestStandbyTakesTheLeaseAtItsExpiry(t *testing.T) {
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
		t.Fatalf("B found the lease free by %q, want at its expiry (\"expired\")", b.Freed())
	}
}

// TestHostsBucketLosesRollupsOnUpgrade: a hosts bucket an orderly from
// before made (expiry markers, so rollups) is updated in place, keeping
// its keys and its message TTLs (which NATS never turns off), and
// refuses rollups from then on.
func TestHostsBucketLosesRollupsOnUpgrade(t *testing.T) {
	_, nc := openQueue(t, queue.Options{LeaseTTL: 2 * time.Second})
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, queue.HostsBucket); err != nil {
		t.Fatal(err)
	}
	old, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket, TTL: 15 * time.Second,
		LimitMarkerTTL: 15 * time.Second, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Create(ctx, "lease.u1", []byte("A")); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.New(ctx, nc, queue.Options{LeaseTTL: 15 * time.Second}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.AllowRollup || cfg.SubjectDeleteMarkerTTL != 0 || !cfg.AllowMsgTTL || cfg.MaxAge != 15*time.Second {
		t.Fatalf("the updated bucket: rollups %v, marker TTL %v, message TTLs %v, TTL %v; want no rollups nor markers, message TTLs kept, the lease's TTL",
			cfg.AllowRollup, cfg.SubjectDeleteMarkerTTL, cfg.AllowMsgTTL, cfg.MaxAge)
	}
	if e, err := old.Get(ctx, "lease.u1"); err != nil || string(e.Value()) != "A" {
		t.Fatalf("the lease kept across the update: %v", err)
	}
}

// TestHostsBucketRollupsTurnedOffAgain: an API from before the hosts
// bucket refused rollups, started during a rolling upgrade, updates the
// bucket back to its settings (expiry markers, so rollups); a new API's
// periodic ApplyDeferredSettings turns them off again, not only its next
// start.
func TestHostsBucketRollupsTurnedOffAgain(t *testing.T) {
	q, nc := openQueue(t, queue.Options{LeaseTTL: 2 * time.Second})
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket, TTL: 2 * time.Second,
		LimitMarkerTTL: 2 * time.Second, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.ApplyDeferredSettings(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.AllowRollup || cfg.SubjectDeleteMarkerTTL != 0 {
		t.Fatalf("the hosts bucket after ApplyDeferredSettings: rollups %v, marker TTL %v; want neither", cfg.AllowRollup, cfg.SubjectDeleteMarkerTTL)
	}
}

// TestStandbyWithoutItsWatchLeavesARenewedLease: the standby times the
// lease from the renewals its watch sees, and a worker's credential may
// delete the watch's consumer (its name is random, so the permission
// cannot be narrowed to one's own). A standby that sees no renewal tries
// the key at the end of a lease: the key is there, so it reads when the
// server stored it and waits for the end of that lease instead; it never
// takes a lease its holder renews, and takes it at its expiry once the
// holder stops. The holder renews every eighth of the lease, so that a
// stall of a loaded machine up to seven eighths of it lapses nothing.
func TestStandbyWithoutItsWatchLeavesARenewedLease(t *testing.T) {
	const ttl = 8 * time.Second
	q, nc := openQueue(t, queue.Options{LeaseTTL: ttl})
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a, err := q.AcquireLease(ctx, "u9", "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, bTook := standbyLease(ctx, q, "u9", "B")
	hosts, err := js.Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The standby's watch: the one consumer filtered on the lease key.
	for deleted := false; !deleted; {
		for info := range hosts.ListConsumers(ctx).Info() {
			if info.Config.FilterSubject == "$KV."+queue.HostsBucket+".lease.u9" {
				if err := hosts.DeleteConsumer(ctx, info.Name); err != nil {
					t.Fatal(err)
				}
				deleted = true
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the standby never watched the lease")
		case <-time.After(20 * time.Millisecond):
		}
	}
	for until := time.Now().Add(2 * ttl); time.Now().Before(until); {
		select {
		case b := <-bTook:
			t.Fatalf("the standby took the lease its holder renews (%v)", b.err)
		case <-time.After(ttl / 8):
		}
		if _, err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b := <-bTook
	if b.err != nil {
		t.Fatal(b.err)
	}
	if b.l.Freed() != "expired" {
		t.Fatalf("the standby found the lease free by %q, want at its expiry", b.l.Freed())
	}
}

// TestStandbyTimesTheLeaseAsItShrinks: an API that shortens
// nats.lease_ttl shortens every lease at once (the bucket's TTL). A
// standby read the lease when it started waiting and again only when a
// try failed, which its live holder's renewals never let happen: it kept
// the old lease, and took a dead holder's host that much later (here ten
// minutes, past the test's two). It reads the TTL again at a renewal
// every half lease, at most 10 s.
func TestStandbyTimesTheLeaseAsItShrinks(t *testing.T) {
	q, nc := openQueue(t, queue.Options{LeaseTTL: 10 * time.Minute})
	ctx, cancel := context.WithTimeout(testenv.Context(t), 2*time.Minute)
	defer cancel()
	a, err := q.AcquireLease(ctx, "s9", "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	waiting, bTook := standbyLease(ctx, q, "s9", "B")
	<-waiting
	// The API restarted with a 4 s lease.
	if _, err := queue.New(ctx, nc, queue.Options{LeaseTTL: 4 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// The holder renews past the standby's next read of the TTL, then dies.
	for until := time.Now().Add(12 * time.Second); time.Now().Before(until); {
		time.Sleep(500 * time.Millisecond)
		if _, err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b := <-bTook
	if b.err != nil {
		t.Fatalf("the standby did not take the dead holder's host under the shortened lease: %v", b.err)
	}
	if b.l.Freed() != "expired" {
		t.Fatalf("the standby found the lease free by %q, want at its expiry", b.l.Freed())
	}
}
