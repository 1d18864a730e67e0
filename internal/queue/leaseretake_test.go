package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestHolderTakesItsHostBackFromAForgerFasterThanItsRoundTrip: a holder
// past its lease (frozen, then thawed) takes its key back from a value
// its host's key did not sign with a write conditioned on the revision
// it read, so as not to overwrite a standby that took the lapsed key.
// Another credential writing the key more often than the holder's round
// trip beat every one: the holder stayed in doubt, its claims paused,
// for as long as the writes came, with no standby to take the host.
// Here the holder reaches the server through a path that delays
// everything slowDelay each way, and the forger, connected directly,
// writes every 25 ms. While the host's owner (PostgreSQL's, for a
// worker) is still the holder, it takes its key back with a plain put
// once lostTakes conditioned writes were beaten; once another instance
// owns the host, the lease is lost, and nothing is put.
func TestHolderTakesItsHostBackFromAForgerFasterThanItsRoundTrip(t *testing.T) {
	t.Run("still the owner", func(t *testing.T) { testHolderPastItsLease(t, "A") })
	t.Run("taken over", func(t *testing.T) { testHolderPastItsLease(t, "B") })
}

func testHolderPastItsLease(t *testing.T, owner string) {
	const ttl = 2 * time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	slow := testenv.SlowPath(t, strings.TrimPrefix(url, "nats://"), slowDelay)
	holder := testenv.Queue(t, "nats://"+slow, "holder", queue.Options{LeaseTTL: ttl})
	fnc, err := queue.Connect(url, "forger")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fnc.Close)
	k := queue.NewMarkKey([]byte("seed of r7"))
	a, err := holder.AcquireSignedLease(ctx, "r7", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	a.CheckOwner(fixedOwner{owner, &asked})
	stopForging := testenv.ForgeLease(ctx, fnc, "r7", "A")
	defer stopForging()

	// Past its lease, as a holder frozen for a lease and a half; then it
	// renews every third of the lease, as a worker does.
	time.Sleep(ttl * 3 / 2)
	began := time.Now()
	for time.Since(began) < 6*ttl {
		retaken, err := a.Renew(ctx)
		switch {
		case err == nil && owner != "A":
			t.Fatalf("the holder took its key back (retaken %t) though another instance owns the host", retaken)
		case err == nil:
			if !retaken {
				t.Fatal("the holder's key taken back, not said to have lapsed")
			}
			t.Logf("the holder took its key back %s after its first renewal past the lease (owner read %d times)", time.Since(began).Round(time.Millisecond), asked)
			return
		case errors.Is(err, queue.ErrLeaseLost):
			if owner == "A" {
				t.Fatalf("the holder, still the host's owner, lost its lease to a forger: %v", err)
			}
			if asked == 0 {
				t.Fatalf("the lease lost without asking the owner: %v", err)
			}
			t.Logf("lost once the owner named another instance, %s after the first renewal past the lease: %v", time.Since(began).Round(time.Millisecond), err)
			return
		}
		time.Sleep(ttl / 3)
	}
	t.Fatalf("the holder past its lease neither took its key back nor lost it within 6 leases, under a forger writing faster than its round trip")
}

// fixedOwner is a host's owner that never changes, name (queue.Owners),
// counting its reads in asked.
type fixedOwner struct {
	name  string
	asked *int
}

func (o fixedOwner) HostOwner(context.Context, string) (queue.HostOwner, error) {
	*o.asked++
	return queue.HostOwner{Instance: o.name}, nil
}

func (o fixedOwner) ConfirmOwner(_ context.Context, _, instance string) (bool, error) {
	return instance == o.name, nil
}
