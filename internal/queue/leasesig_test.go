package queue_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestHolderTakesBackALeaseItsHostDidNotSign: another host's credential
// can store any value on a host's lease key (decisions.md, hA18; the
// writes here stand in for that route). The holder, signing with its
// host's key, takes back at once, with no lapse, a value that names
// another worker unsigned, with a signature that does not check, or
// signed with another host's key, and a key deleted under it; a value its
// own host's key signed for another instance is a real rival's: lost, as
// before. A holder with no key cannot tell and loses the host to any
// value, as before. Past its lease, a value its host's key did not sign
// is taken back as lapsed (the lease's key lapsed at a frozen
// nats-server's thaw, and a forger then ended a live holder's tenure);
// one its host's key signed is lost.
func TestHolderTakesBackALeaseItsHostDidNotSign(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 3 * time.Second})
	ctx := testenv.Context(t)
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := queue.NewMarkKey([]byte("seed of h1")), queue.NewMarkKey([]byte("seed of h2"))
	l, err := q.AcquireSignedLease(ctx, "h1", "h1/a", h1, nil)
	if err != nil {
		t.Fatal(err)
	}
	lapses := 0
	l.OnLapse(func() { lapses++ })
	if holder, err := q.LeaseHolder(ctx, "h1"); err != nil || holder != "h1/a" {
		t.Fatalf("LeaseHolder = %q, %v; want the instance without its signature", holder, err)
	}
	own, err := kv.Get(ctx, "lease.h1")
	if err != nil {
		t.Fatal(err)
	}
	for _, forged := range []struct {
		name  string
		write func() error
	}{
		{"unsigned", func() error { _, err := kv.Put(ctx, "lease.h1", []byte("h1/b")); return err }},
		{"a signature that does not check", func() error {
			_, err := kv.Put(ctx, "lease.h1", []byte("h1/b\n"+strings.Repeat("0", 64)))
			return err
		}},
		{"h1's own signature, on another instance", func() error {
			v := strings.Replace(string(own.Value()), "h1/a\n", "h1/b\n", 1)
			_, err := kv.Put(ctx, "lease.h1", []byte(v))
			return err
		}},
		// Naming h1/b, signed with h2's key for h1's key name.
		{"signed with another host's key", func() error {
			_, err := kv.Put(ctx, "lease.h1", []byte("h1/b\n"+queue.SignLeaseForTest(h2, "lease.h1", "h1/b")))
			return err
		}},
		{"deleted", func() error { return kv.Delete(ctx, "lease.h1") }},
		{"an expiry marker", func() error {
			m := nats.NewMsg("$KV." + queue.HostsBucket + ".lease.h1")
			m.Header.Set("KV-Operation", "PURGE")
			_, err := q.JetStream().PublishMsg(ctx, m)
			return err
		}},
	} {
		if err := forged.write(); err != nil {
			t.Fatal(err)
		}
		before := lapses
		if retaken, err := l.Renew(ctx); err != nil || retaken {
			t.Fatalf("%s: the holder's renewal: retaken %v, %v; want the lease taken back, not as expired", forged.name, retaken, err)
		}
		gone := forged.name == "deleted" || forged.name == "an expiry marker"
		if lapses != before && !gone {
			t.Errorf("%s: the holder's claims paused for a value it did not sign", forged.name)
		}
		// Signed anew at each write (the revision it was written
		// after, leaseValue): the holder's instance, its signature good.
		if e, err := kv.Get(ctx, "lease.h1"); err != nil || !strings.HasPrefix(string(e.Value()), "h1/a\n") || !queue.TrustLeaseForTest("lease.h1", e.Value(), h1) {
			t.Fatalf("%s: the key after the renewal: %v; want the holder's signed value", forged.name, err)
		}
	}

	// Another host's signed value, copied: the key's name is in the
	// signature, so on h1's key it does not check, and is taken back.
	if _, err := q.AcquireSignedLease(ctx, "h3", "h1/b", h1, nil); err != nil {
		t.Fatal(err)
	}
	copied, err := kv.Get(ctx, "lease.h3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "lease.h1", copied.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Renew(ctx); err != nil {
		t.Fatalf("another host's signature copied: %v; want it taken back", err)
	}
	// A worker of h1, on h1's seed, that took the key (deleted by hand
	// here): a real rival, and the holder lost the host.
	if err := kv.Delete(ctx, "lease.h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := q.AcquireSignedLease(ctx, "h1", "h1/b", h1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("a value h1's key signed for h1/b: %v; want ErrLeaseLost", err)
	}

	// A holder without a key loses its host to any value, as before.
	u, err := q.AcquireLease(ctx, "u1", "u1/a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "lease.u1", []byte("forger")); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("a holder with no key, its key written over: %v; want ErrLeaseLost", err)
	}

	// Past its lease, a value its host's key did not sign is no rival's
	// either (an older worker that took the expired key loses it, as to
	// an upgraded standby): taken back as lapsed, on the revision read.
	p, err := q.AcquireSignedLease(ctx, "p1", "p1/a", h1, nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 20*time.Second, "the lease of p1 expired", func() bool {
		_, err := kv.Get(ctx, "lease.p1")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if _, err := kv.Create(ctx, "lease.p1", []byte("p1/older")); err != nil {
		t.Fatal(err)
	}
	plapses := 0
	p.OnLapse(func() { plapses++ })
	if retaken, err := p.Renew(ctx); err != nil || !retaken || plapses != 1 {
		t.Fatalf("past its lease, an unsigned value: retaken %v, %v, %d lapses; want it taken back as lapsed", retaken, err, plapses)
	}
	if holder, err := q.LeaseHolder(ctx, "p1"); err != nil || holder != "p1/a" {
		t.Fatalf("past its lease, the key after the renewal names %q, %v; want p1/a", holder, err)
	}
	// Past its lease, a value its host's key signed for another
	// instance (a standby that took the expired key): lost.
	if err := kv.Delete(ctx, "lease.p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := q.AcquireSignedLease(ctx, "p1", "p1/b", h1, nil); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 20*time.Second, "p1/a's lease is past", func() bool { return time.Since(p.Written()) > 3*time.Second })
	if _, err := p.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("past its lease, a value h1's key signed for p1/b: %v; want ErrLeaseLost", err)
	}
}

// TestStandbyJudgesTheLeaseByItsHostsKey: a standby of h1, on h1's key,
// takes neither a key deleted as it starts, nor a forged delete naming
// the holder as its releaser, nor a
// copied release of an earlier holder, nor an expiry marker, nor a value
// h1's key did not sign for a free key while the holder renews; and once
// the holder is dead, forged values written more often than the lease do
// not keep it waiting: it takes the host a lease after the holder's last
// renewal.
func TestStandbyJudgesTheLeaseByItsHostsKey(t *testing.T) {
	const ttl = 2 * time.Second
	q, _ := openQueue(t, queue.Options{LeaseTTL: ttl})
	ctx := testenv.Context(t)
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	h1 := queue.NewMarkKey([]byte("seed of h1"))
	a, err := q.AcquireSignedLease(ctx, "h1", "h1/a", h1, nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *queue.Lease
		err error
	}
	// The standby starts on a key another credential has just deleted,
	// naming the holder as its releaser: it must not take it.
	m := nats.NewMsg("$KV." + queue.HostsBucket + ".lease.h1")
	m.Header = nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {"h1/a"}, queue.ReleaseSignatureHeader: {strings.Repeat("0", 64)}}
	if _, err := q.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	took := make(chan result, 1)
	go func() {
		l, err := q.AcquireSignedLease(ctx, "h1", "h1/s", h1, func(string) { close(waiting) })
		took <- result{l, err}
	}()
	select {
	case <-waiting:
	case r := <-took:
		t.Fatalf("the standby took the host from its live holder at its start: %v (freed %q)", r.err, r.l.Freed())
	}
	publish := func(hdr nats.Header) {
		t.Helper()
		m := nats.NewMsg("$KV." + queue.HostsBucket + ".lease.h1")
		m.Header = hdr
		if _, err := q.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	forgeries := []func(){
		func() {
			publish(nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {"h1/a"}, queue.ReleaseSignatureHeader: {strings.Repeat("0", 64)}})
		},
		func() {
			publish(nats.Header{"KV-Operation": {"DEL"}, queue.ReleasedHeader: {"h1/old"},
				queue.ReleaseSignatureHeader: {queue.SignReleaseForTest(h1, "lease.h1", "h1/old")}})
		},
		func() { publish(nats.Header{"KV-Operation": {"PURGE"}}) },
		func() { publish(nats.Header{jetstream.MarkerReasonHeader: {"MaxAge"}}) },
		func() {
			if _, err := kv.Put(ctx, "lease.h1", []byte("forger")); err != nil {
				t.Fatal(err)
			}
		},
	}
	// Two leases of forgeries, each taken back by the live holder's
	// renewal.
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); {
		for _, forge := range forgeries {
			forge()
			if _, err := a.Renew(ctx); err != nil {
				t.Fatalf("the holder's renewal: %v", err)
			}
			select {
			case r := <-took:
				t.Fatalf("the standby took the host from its live holder: %v (freed %q)", r.err, r.l.Freed())
			case <-time.After(ttl / 10):
			}
		}
	}

	// The holder dies; forged values keep coming, more often than the
	// lease.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(ttl / 8):
			}
			_, _ = kv.Put(ctx, "lease.h1", []byte("forger"))
		}
	}()
	defer func() { close(stop); <-done }()
	select {
	case r := <-took:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Freed() != "expired" {
			t.Errorf("the standby took the host as %q, want expired", r.l.Freed())
		}
	case <-time.After(10 * ttl):
		t.Fatal("the standby did not take a dead holder's host while forged values were written over its key")
	}
}

// BenchmarkLeaseRenewal is a renewal's cost, signed and unsigned: the
// KV update of the key on an embedded server (testenv.NATS). The value
// is signed once, when the lease is taken; a renewal writes it as it
// is. "taken back" is a renewal that finds a forged value in place of
// its own (written in the loop, outside the timer): the bucket's TTL,
// the key read and checked, the put.
func BenchmarkLeaseRenewal(b *testing.B) {
	for _, c := range []struct {
		name string
		k    queue.MarkKey
	}{{"unsigned", nil}, {"signed", queue.NewMarkKey([]byte("seed of h1"))}} {
		b.Run(c.name, func(b *testing.B) {
			nc, err := queue.Connect(testenv.NATS(b), "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			ctx := b.Context()
			q, err := queue.New(ctx, nc, queue.Options{LeaseTTL: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			l, err := q.AcquireSignedLease(ctx, "h1", "h1/0196f1a4-6b0e-7d1c-9a3f-2c4b5d6e7f80", c.k, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := l.Renew(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("taken back", func(b *testing.B) {
		nc, err := queue.Connect(testenv.NATS(b), "bench")
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		ctx := b.Context()
		q, err := queue.New(ctx, nc, queue.Options{LeaseTTL: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
		if err != nil {
			b.Fatal(err)
		}
		l, err := q.AcquireSignedLease(ctx, "h1", "h1/0196f1a4-6b0e-7d1c-9a3f-2c4b5d6e7f80", queue.NewMarkKey([]byte("seed of h1")), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			if _, err := kv.Put(ctx, "lease.h1", []byte("forger")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := l.Renew(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLeaseCheck is what a standby computes for each renewal it
// sees, and a holder for a value it finds in place of its own: the
// signature's check.
func BenchmarkLeaseCheck(b *testing.B) {
	k := queue.NewMarkKey([]byte("seed of h1"))
	v := queue.LeaseValueForTest("lease.h1", "h1/0196f1a4-6b0e-7d1c-9a3f-2c4b5d6e7f80", k)
	b.ReportAllocs()
	for b.Loop() {
		if !queue.TrustLeaseForTest("lease.h1", v, k) {
			b.Fatal("not signed")
		}
	}
}
