package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
// stop. So does one whose worker could not read PostgreSQL before the
// wait (OwnerUnread), from the owner it reads before its take. A host
// nobody else held is still taken at once.
func TestStandbyStartingOnAnAbsentKeyLeavesItToItsHolder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		k      queue.MarkKey
		told   bool // told by PostgreSQL; else learned in an earlier wait
		unread bool // neither: the owner read before the take says it
	}{
		{"signed told", queue.NewMarkKey([]byte("seed of ab1")), true, false},
		{"signed learned", queue.NewMarkKey([]byte("seed of ab1")), false, false},
		{"unsigned told", nil, true, false},
		{"unsigned learned", nil, false, false},
		{"signed unread", queue.NewMarkKey([]byte("seed of ab1")), false, true},
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
			asked := 0
			acquire := func(ctx context.Context, standbyFn func(string)) (*queue.Lease, error) {
				if tc.unread {
					return standby.AcquireOwnedLease(ctx, "ab1", "B", tc.k, fixedOwner{"A", &asked}, standbyFn)
				}
				return standby.AcquireSignedLease(ctx, "ab1", "B", tc.k, standbyFn)
			}
			switch {
			case tc.told:
				standby.HeldElsewhere("ab1")
			case tc.unread:
				standby.OwnerUnread("ab1")
			default:
				// An earlier wait of the standby's process, which saw
				// the holder renew and ended without the host.
				wctx, endWait := context.WithCancel(ctx)
				waiting := make(chan struct{})
				var once sync.Once
				ended := make(chan error, 1)
				go func() {
					_, err := acquire(wctx, func(string) { once.Do(func() { close(waiting) }) })
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
					if l, err := acquire(sctx, nil); err == nil {
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

// TestStandbyLeavesACopiedReleaseOfAnEarlierTenure: a holder keeps its
// instance when it loses its host and takes it again, and its signed
// release named only that instance: a copy of its earlier tenure's
// release, written again on the key (by a credential that can read it:
// the API's, or a host's own workers'), was its standby's signal that
// the live holder had released the host; the standby took it at once,
// no lease of contact asked, and the holder's order was interrupted by
// its takeover. The release names the revision it deletes after, signed:
// a copy names one below the renewals the standby honoured since, and is
// a delete by someone else, which leaves the key to its holder for a
// lease; the holder puts it back at its next renewal. A real release
// still hands the host over at once.
func TestStandbyLeavesACopiedReleaseOfAnEarlierTenure(t *testing.T) {
	const ttl = time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	k := queue.NewMarkKey([]byte("seed of rr1"))
	first, err := holder.AcquireSignedLease(ctx, "rr1", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := holder.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	subject := "$KV." + queue.HostsBucket + ".lease.rr1"
	release, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil || release.Header.Get(queue.ReleasedHeader) != "A" {
		t.Fatalf("the first tenure's release: %v, %v", release, err)
	}
	// The same instance's second tenure, renewed every third of a lease.
	a, err := holder.AcquireSignedLease(ctx, "rr1", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lost atomic.Pointer[error]
	var wg sync.WaitGroup
	rctx, stopRenewing := context.WithCancel(ctx)
	renewing := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(renewing)
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
	waiting, took := make(chan struct{}), make(chan *queue.Lease, 1)
	var once sync.Once
	sctx, stopStandby := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sctx.Err() == nil {
			l, err := standby.AcquireSignedLease(sctx, "rr1", "B", k, func(string) { once.Do(func() { close(waiting) }) })
			if err == nil {
				took <- l
				return
			}
		}
	}()
	defer func() {
		stopRenewing()
		stopStandby()
		wg.Wait()
	}()
	<-waiting
	time.Sleep(ttl) // the holder's renewals honoured
	for i := range 3 {
		m := nats.NewMsg(subject)
		for h, v := range release.Header {
			if !strings.HasPrefix(h, "Nats-") { // not the server's own (Nats-Sequence...), nor the release's condition
				m.Header[h] = v
			}
		}
		if _, err := holder.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-took:
			t.Fatalf("copy %d: the standby took the lease (freed %q) on a copy of its live holder's earlier release", i+1, l.Freed())
		case <-time.After(2 * ttl):
		}
	}
	if err := lost.Load(); err != nil {
		t.Fatalf("the holder lost its lease: %v", *err)
	}
	stopRenewing()
	<-renewing
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-took:
		if l.Freed() != "released" {
			t.Fatalf("the standby took the lease its holder released as %q", l.Freed())
		}
	case <-time.After(10 * ttl):
		t.Fatal("the standby did not take the lease its holder released")
	}
}
