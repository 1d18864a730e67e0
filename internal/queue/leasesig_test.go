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
// value, as before; and past its lease, an unsigned value is honoured (an
// older worker may have taken the expired key).
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
		if _, err := l.Renew(ctx); err != nil {
			t.Fatalf("%s: the holder's renewal: %v; want the lease taken back", forged.name, err)
		}
		gone := forged.name == "deleted" || forged.name == "an expiry marker"
		if lapses != before && !gone {
			t.Errorf("%s: the holder's claims paused for a value it did not sign", forged.name)
		}
		if e, err := kv.Get(ctx, "lease.h1"); err != nil || string(e.Value()) != string(own.Value()) {
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

	// Past its lease, an unsigned value may be an older worker's that
	// took the expired key: honoured.
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
	if _, err := p.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("past its lease, an unsigned holder: %v; want ErrLeaseLost", err)
	}
}
