package queue_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStandbyStartingOnAnAbsentKeyLeavesItToItsHolder: a live holder's
// key can be absent from the server's store for up to a third of a lease
// (until its next renewal puts it back): a server clock stepped forward
// past the lease (nats-server ages messages by its wall clock and removes
// them with no marker), the hosts bucket made again, a purge of the key.
// A purge of the key's subject, every 10 ms, stands in for them here
// (TestWaitingStandbyLeavesALeaseAClockStepExpired says why). A wait that
// began while the key was absent took it at once, and the holder, at its
// next renewal, found a value of another instance: lost, its running
// order interrupted by the standby's takeover. A standby that knows
// another instance held the host lately, from PostgreSQL at its start
// (told: HeldElsewhere, what the worker calls) or from an earlier wait of
// its own process (learned), leaves the absent key to that holder for a
// lease, follows its renewals, and takes the host a lease after they
// stop. A host nobody else held is still taken at once.
func TestStandbyStartingOnAnAbsentKeyLeavesItToItsHolder(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    queue.MarkKey
		told bool // told by PostgreSQL; else learned in an earlier wait
	}{
		{"signed told", queue.NewMarkKey([]byte("seed of ab1")), true},
		{"signed learned", queue.NewMarkKey([]byte("seed of ab1")), false},
		{"unsigned told", nil, true},
		{"unsigned learned", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const ttl = time.Second
			ctx := testenv.Context(t)
			url := testenv.NATS(t)
			holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
			standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
			a, err := holder.AcquireSignedLease(ctx, "ab1", "A", tc.k, nil)
			if err != nil {
				t.Fatal(err)
			}
			var lost atomic.Pointer[error]
			var wg sync.WaitGroup
			rctx, stopRenewing := context.WithCancel(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for rctx.Err() == nil {
					if _, err := a.Renew(rctx); errors.Is(err, queue.ErrLeaseLost) {
						lost.Store(&err)
						return
					}
					select {
					case <-rctx.Done():
					case <-time.After(ttl / 3):
					}
				}
			}()
			pctx, stopPurging := context.WithCancel(ctx)
			defer func() {
				stopPurging()
				stopRenewing()
				wg.Wait()
			}()
			if tc.told {
				standby.HeldElsewhere("ab1")
			} else {
				// An earlier wait of the standby's process, which saw
				// the holder renew and ended without the host.
				wctx, endWait := context.WithCancel(ctx)
				waiting := make(chan struct{})
				var once sync.Once
				ended := make(chan error, 1)
				go func() {
					_, err := standby.AcquireSignedLease(wctx, "ab1", "B", tc.k, func(string) { once.Do(func() { close(waiting) }) })
					ended <- err
				}()
				<-waiting
				time.Sleep(ttl) // renewals seen
				endWait()
				if err := <-ended; err == nil {
					t.Fatal("the first wait took the lease its holder renewed")
				}
			}
			st, err := holder.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			purge := func() error {
				return st.Purge(pctx, jetstream.WithPurgeSubject("$KV."+queue.HostsBucket+".lease.ab1"))
			}
			if err := purge(); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for pctx.Err() == nil {
					_ = purge()
					select {
					case <-pctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
				}
			}()
			took := make(chan *queue.Lease, 1)
			sctx, stopStandby := context.WithCancel(ctx)
			defer stopStandby()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for sctx.Err() == nil {
					if l, err := standby.AcquireSignedLease(sctx, "ab1", "B", tc.k, nil); err == nil {
						took <- l
						return
					}
				}
			}()
			select {
			case l := <-took:
				t.Fatalf("the standby took the lease (freed %q) while its holder renewed it, its key absent", l.Freed())
			case <-time.After(3 * ttl):
			}
			if err := lost.Load(); err != nil {
				t.Fatalf("the holder lost its lease: %v", *err)
			}
			stopPurging()
			stopRenewing()
			select {
			case <-took:
			case <-time.After(10 * ttl):
				t.Fatal("the standby did not take the lease its holder stopped renewing")
			}
		})
	}
	t.Run("nobody else held it", func(t *testing.T) {
		ctx := testenv.Context(t)
		q := testenv.Queue(t, testenv.NATS(t), "first", queue.Options{LeaseTTL: time.Second})
		standby := false
		l, err := q.AcquireSignedLease(ctx, "ab2", "A", queue.NewMarkKey([]byte("seed of ab2")), func(string) { standby = true })
		if err != nil {
			t.Fatal(err)
		}
		if standby || l.Freed() != "" {
			t.Fatalf("a host nobody held was taken after a wait (standby %v, freed %q), not at once", standby, l.Freed())
		}
	})
}
