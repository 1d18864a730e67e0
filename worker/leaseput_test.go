package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPutOverATakeLeavesTheHostToItsOwner: a holder past its lease,
// whose conditioned take-backs a forger beat, takes its key back with a
// plain put while PostgreSQL still names it the host's owner (hC23's
// retake). A standby's take landing between that read of the owner and
// the put is overwritten; the standby then takes the host over in
// PostgreSQL (TakeHost, its takeover's first statement). The interleaving
// is forced: the holder's read of the owner lets the standby take the
// key, honestly, before it answers. Judged by the key alone, both lost
// the host: the standby's next renewal found the holder's value, a lost
// lease, while PostgreSQL's fence refused the holder's claims, so nobody
// ran the host's orders until one of them took it again as a standby.
// PostgreSQL's owner is the arbiter: the standby, which owns the host,
// takes its key back, and the holder loses its lease.
func TestPutOverATakeLeavesTheHostToItsOwner(t *testing.T) {
	const (
		ttl  = 2 * time.Second
		host = "r8"
	)
	ctx := testenv.Context(t)
	store, _ := testenv.Store(t, testenv.Postgres(t))
	url := testenv.NATS(t)
	// The holder's round trip is longer than three of the forger's writes
	// (hC23's TestHolderTakesItsHostBackFromAForgerFasterThanItsRoundTrip).
	slow := testenv.SlowPath(t, strings.TrimPrefix(url, "nats://"), 40*time.Millisecond)
	holderQ := testenv.Queue(t, "nats://"+slow, "holder", queue.Options{LeaseTTL: ttl})
	standbyQ := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	fnc, err := queue.Connect(url, "forger")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fnc.Close)
	k := queue.NewMarkKey([]byte("seed of r8"))
	owner := func(ctx context.Context) (string, error) {
		o, err := store.HostOwner(ctx, host)
		return o.Instance, err
	}
	takeOver := func(instance string) {
		if _, _, err := store.TakeHost(ctx, host, "test", postgres.Owner{Instance: instance}); err != nil {
			t.Fatal(err)
		}
	}

	a, err := holderQ.AcquireSignedLease(ctx, host, "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	takeOver("A")
	var (
		b           *queue.Lease
		stopForging func()
	)
	a.CheckOwner(func(ctx context.Context) (string, error) {
		o, err := owner(ctx)
		if b != nil || err != nil {
			return o, err
		}
		// The window: the owner is read, the put not yet sent. The
		// forger stops, so that the standby's take is a conditioned
		// write, an honest one.
		stopForging()
		wctx, cancel := context.WithTimeout(ctx, 10*ttl)
		defer cancel()
		b, err = standbyQ.AcquireSignedLease(wctx, host, "B", k, nil)
		if err != nil {
			t.Errorf("the standby did not take the lapsed key: %v", err)
		}
		return o, nil
	})
	stopForging = testenv.ForgeLease(ctx, fnc, host, "A")
	defer stopForging()

	// Past its lease, as a holder frozen for a lease and a half; then it
	// renews every third of the lease, as a worker does.
	time.Sleep(ttl * 3 / 2)
	began := time.Now()
	for {
		retaken, err := a.Renew(ctx)
		if t.Failed() {
			t.FailNow()
		}
		if err == nil && b != nil {
			if !retaken {
				t.Fatal("the holder's key taken back, not said to have lapsed")
			}
			break
		}
		if errors.Is(err, queue.ErrLeaseLost) {
			t.Fatalf("the holder, still the host's owner, lost its lease: %v", err)
		}
		if time.Since(began) > 6*ttl {
			t.Fatalf("the holder did not take its key back with a put within 6 leases (last: %v)", err)
		}
		time.Sleep(ttl / 3)
	}
	if h, err := holderQ.LeaseHolder(ctx, host); err != nil || h != "A" {
		t.Fatalf("after the holder's put the key names %q (%v), want A", h, err)
	}
	// The standby's takeover, as its tenure begins with it; then its
	// renewal a third of a lease on, as its worker's beat sends it.
	takeOver("B")
	b.CheckOwner(owner)
	if _, err := b.Renew(ctx); err != nil {
		t.Fatalf("the standby, which owns the host in PostgreSQL, lost its lease to the holder's put over its take (the holder's claims are refused by the fence: nobody runs the host): %v", err)
	}
	_, err = a.Renew(ctx)
	if !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("the holder, no longer the host's owner, renewed its lease over the standby's: %v", err)
	}
	t.Logf("the holder lost its lease: %v", err)
	if _, err := b.Renew(ctx); err != nil {
		t.Fatalf("the standby's next renewal: %v", err)
	}
	if h, err := standbyQ.LeaseHolder(ctx, host); err != nil || h != "B" {
		t.Fatalf("the key names %q (%v), want the host's owner, B", h, err)
	}
}
