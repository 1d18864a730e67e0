package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStandbyTakesTheHostFromAForgerFasterThanItsRoundTrip: a standby
// takes a key it is due (its holder gone a lease) with a write
// conditioned on the key's last revision as it read it. Another
// credential writing the key more often than the standby's round trip to
// the server beat every such write: the dead holder's host was never
// taken for as long as it wrote (TestFaultsNATSFrozenSigned on a loaded
// machine: both standbys of h1, 20 s, after h1's holder had released it
// to take the host again). Here the standby reaches the server through
// a path that delays everything by slowDelay each way, and the forger,
// connected directly, writes what the fault test's does (an unsigned
// value, a value with a bad signature, a release with a bad signature, a
// purge marker) every 25 ms: the standby takes the host once it lost
// lostTakes conditioned takes, with a plain put. While the holder renews
// (a value the standby honours), it takes nothing, plain or not.
func TestStandbyTakesTheHostFromAForgerFasterThanItsRoundTrip(t *testing.T) {
	t.Run("holder released", func(t *testing.T) { testForgerFasterThanTheRoundTrip(t, false) })
	t.Run("holder lives", func(t *testing.T) { testForgerFasterThanTheRoundTrip(t, true) })
}

// slowDelay is the standby's path's delay each way: its round trip is
// more than three of the forger's writes.
const slowDelay = 40 * time.Millisecond

func testForgerFasterThanTheRoundTrip(t *testing.T, lives bool) {
	// Not 1 s: a holder renewing every third of it on a saturated
	// machine lets it lapse for real (decisions.md, the thirty-first
	// round's "The round's change read again").
	const ttl = 2 * time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	slow := testenv.SlowPath(t, strings.TrimPrefix(url, "nats://"), slowDelay)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, "nats://"+slow, "standby", queue.Options{LeaseTTL: ttl})
	fnc, err := queue.Connect(url, "forger")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fnc.Close)
	k := queue.NewMarkKey([]byte("seed of r6"))
	a, err := holder.AcquireSignedLease(ctx, "r6", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A first wait learns that the host's lease is signed, as h1's
	// standby had before the fault test's stall: a standby that never
	// saw a signed value honours unsigned ones as an older holder's
	// (decisions.md, hE20's Left).
	testenv.LearnSignedLease(t, "r6", k, ttl, a, standby)

	stopForging := testenv.ForgeLease(ctx, fnc, "r6", "A")
	defer stopForging()

	// The holder renews every third of the lease, on its own connection,
	// until stopRenewing; a renewal past the lost lease fails the test.
	rctx, stopRenewing := context.WithCancel(ctx)
	defer stopRenewing()
	renewing := make(chan error, 1)
	go func() {
		if !lives {
			renewing <- a.Release(ctx)
			return
		}
		for {
			select {
			case <-rctx.Done():
				renewing <- nil
				return
			case <-time.After(ttl / 3):
			}
			if _, err := a.Renew(ctx); err != nil {
				renewing <- err
				return
			}
		}
	}()
	began := time.Now()
	took := make(chan error, 1)
	go func() {
		_, err := standby.AcquireSignedLease(ctx, "r6", "B", k, nil)
		took <- err
	}()
	if lives {
		select {
		case err := <-took:
			t.Fatalf("the standby took the host %s after its wait began, while its holder renewed (err %v)", time.Since(began).Round(time.Millisecond), err)
		case err := <-renewing:
			t.Fatalf("the holder stopped renewing: %v", err)
		case <-time.After(6 * ttl):
		}
		stopRenewing()
	}
	if err := <-renewing; err != nil {
		t.Fatalf("the holder: %v", err)
	}
	select {
	case err := <-took:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the standby took the host %s after its wait began", time.Since(began).Round(time.Millisecond))
	case <-time.After(12 * ttl):
		t.Fatalf("the standby did not take the host within 12 leases of its holder's end, under a forger writing faster than its round trip")
	}
}

// TestStandbyWithASlowRoundTripTakesADeadHoldersHost: a standby whose
// round trip to the server is 0.6 s (a path that delays everything by
// 300 ms each way, as a loaded machine or a distant network does) under
// a lease of 2 s counted every probe of its contact with the server as
// a silence (not answered within lease/4, 0.5 s), though the server
// answered each, and took nothing, not even the host of a holder that
// had stopped renewing, for as long as the path stayed slow
// (docs/decisions.md, hF25: a worker never took a fresh host in 60 s).
// A probe counts as a silence from lease/2 on, which no holder renewing
// every third of the lease can lapse in: the standby takes the host a
// lease after its holder's end.
func TestStandbyWithASlowRoundTripTakesADeadHoldersHost(t *testing.T) {
	const ttl = 2 * time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	slow := testenv.SlowPath(t, strings.TrimPrefix(url, "nats://"), 300*time.Millisecond)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, "nats://"+slow, "standby", queue.Options{LeaseTTL: ttl})
	// The holder takes the lease and dies: no renewal, no release.
	if _, err := holder.AcquireLease(ctx, "r9", "A", nil); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 15*ttl)
	defer cancel()
	var err error
	for tctx.Err() == nil {
		// A try that finds the server silent fails; the worker tries
		// again, as here.
		var l *queue.Lease
		if l, err = standby.AcquireLease(tctx, "r9", "B", nil); err == nil {
			t.Logf("the standby took the host (freed %q)", l.Freed())
			return
		}
	}
	t.Fatalf("the standby, its round trip 0.6 s, did not take the host of a dead holder within 15 leases: %v", err)
}
