package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestHolderTakesBackACopiedSignedLease: a lease value its host's key
// signed was valid for its instance's whole tenure, and after it: a copy
// of an earlier holder's value, written again by another credential (the
// reply-subject route, decisions.md hA18; a put here), was a value its
// host's key signed for another instance, so the live holder lost the
// host to it (ErrLeaseLost) and ended its tenure. The value now names the
// revision it was written after, and a copy names one below the holder's
// own: taken back at once, as a forgery, both within the lease and past
// it (there as a lapse, on the revision read). A copy of the holder's own
// earlier value is taken back too. A real rival's take is still a lost
// lease.
func TestHolderTakesBackACopiedSignedLease(t *testing.T) {
	q, _ := openQueue(t, queue.Options{LeaseTTL: 2 * time.Second})
	ctx := testenv.Context(t)
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	k := queue.NewMarkKey([]byte("seed of r1"))
	// An earlier tenure of r1/a, renewed, then released.
	a, err := q.AcquireSignedLease(ctx, "r1", "r1/a", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	earlier, err := kv.Get(ctx, "lease.r1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := q.AcquireSignedLease(ctx, "r1", "r1/b", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Freed() != "" {
		t.Fatalf("r1/b took the released key as %q", b.Freed())
	}
	own, err := kv.Get(ctx, "lease.r1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		v    []byte
	}{
		{"the earlier holder's value", earlier.Value()},
		{"its own earlier value", own.Value()},
	} {
		if _, err := kv.Put(ctx, "lease.r1", c.v); err != nil {
			t.Fatal(err)
		}
		if retaken, err := b.Renew(ctx); err != nil || retaken {
			t.Fatalf("%s written again: the holder's renewal: retaken %v, %v; want it taken back", c.name, retaken, err)
		}
		if holder, err := q.LeaseHolder(ctx, "r1"); err != nil || holder != "r1/b" {
			t.Fatalf("%s written again: the key names %q (%v) after the renewal, want r1/b", c.name, holder, err)
		}
	}

	// Past the lease (a holder frozen, or cut off): a copy is taken back
	// as a lapse, not a lost lease.
	if _, err := kv.Put(ctx, "lease.r1", earlier.Value()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*time.Second + 100*time.Millisecond)
	if _, err := b.Renew(ctx); err != nil {
		t.Fatalf("the earlier holder's value written again, past the lease: %v; want it taken back", err)
	}
	if holder, err := q.LeaseHolder(ctx, "r1"); err != nil || holder != "r1/b" {
		t.Fatalf("past the lease: the key names %q (%v), want r1/b", holder, err)
	}

	// A worker of r1 that takes the key once it is free is a real rival.
	if err := kv.Delete(ctx, "lease.r1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*time.Second + 100*time.Millisecond)
	if _, err := q.AcquireSignedLease(ctx, "r1", "r1/c", k, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Renew(ctx); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("r1/c's take, past r1/b's lease: %v; want ErrLeaseLost", err)
	}
}

// TestStandbyLeavesACopiedRenewalUncounted: a standby counted every value
// its host's key signed as its holder's renewal, copies included: a
// dead holder's last value, copied from the key and written again by
// another credential every lease/8, kept its standby waiting for as long
// as the copies came, and the host ran nothing. Copies name a revision
// below the last renewal the standby honoured: not counted, and the
// standby takes the host a lease after its holder stopped. While the
// holder lives, copies of its newest value written between its renewals
// hand the standby nothing: the holder takes each back, and its value
// then names the copy's revision.
func TestStandbyLeavesACopiedRenewalUncounted(t *testing.T) {
	const ttl = time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	forger := testenv.Queue(t, url, "forger", queue.Options{LeaseTTL: ttl})
	kv, err := forger.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	k := queue.NewMarkKey([]byte("seed of r2"))
	a, err := holder.AcquireSignedLease(ctx, "r2", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lost atomic.Pointer[error]
	rctx, stopRenewing := context.WithCancel(ctx)
	var wg sync.WaitGroup
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
	waiting, took := make(chan struct{}), make(chan *queue.Lease, 1)
	var once sync.Once
	sctx, stopStandby := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sctx.Err() == nil {
			l, err := standby.AcquireSignedLease(sctx, "r2", "B", k, func(string) { once.Do(func() { close(waiting) }) })
			if err == nil {
				took <- l
				return
			}
			t.Logf("standby: %v", err)
		}
	}()
	// The forger copies the holder's value (the newest one while the
	// holder renews, its last one once it stopped) and writes it again.
	var (
		last    atomic.Value // []byte: the holder's newest value read
		renewed = make(chan struct{})
	)
	fctx, stopForging := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for fctx.Err() == nil {
			select {
			case <-renewed:
			default:
				if e, err := kv.Get(fctx, "lease.r2"); err == nil && strings.HasPrefix(string(e.Value()), "A\n") {
					last.Store(e.Value())
				}
			}
			if v, ok := last.Load().([]byte); ok {
				_, _ = kv.Put(fctx, "lease.r2", v)
			}
			select {
			case <-fctx.Done():
			case <-time.After(ttl / 8):
			}
		}
	}()
	defer func() {
		stopForging()
		stopRenewing()
		stopStandby()
		wg.Wait()
	}()
	<-waiting
	select {
	case l := <-took:
		t.Fatalf("the standby took the lease (freed %q) while its holder renewed it", l.Freed())
	case <-time.After(3 * ttl):
	}
	if err := lost.Load(); err != nil {
		t.Fatalf("the holder lost its lease to copies of its own value: %v", *err)
	}
	// The holder dies (no release); the forger keeps writing its last
	// value.
	stopRenewing()
	close(renewed)
	stopped := time.Now()
	select {
	case l := <-took:
		t.Logf("the standby took the lease %s after its holder stopped (freed %q)", time.Since(stopped).Round(time.Millisecond), l.Freed())
	case <-time.After(6 * ttl):
		t.Fatal("the standby did not take the lease of a holder that stopped renewing: copies of its last value kept it waiting")
	}
}

// TestStandbyKeepsWhatItLearnedAcrossWaits: a standby honours unsigned
// values as an older holder's renewals until it has seen a value its
// host's key signed (a rolling upgrade). What it had seen was kept by
// one wait only: a wait that ended without the host (here canceled, as a
// try the NATS server does not answer ends) forgot it, and the next one
// honoured another credential's unsigned values after the holder died,
// waiting for as long as they came (TestFaultsNATSFrozenSigned: 28 s,
// the host running nothing). The process now keeps it, and the next
// wait takes the dead holder's host a lease after it started.
func TestStandbyKeepsWhatItLearnedAcrossWaits(t *testing.T) {
	const ttl = time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	forger := testenv.Queue(t, url, "forger", queue.Options{LeaseTTL: ttl})
	kv, err := forger.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	k := queue.NewMarkKey([]byte("seed of r4"))
	a, err := holder.AcquireSignedLease(ctx, "r4", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first wait, while the holder renews: it sees signed values,
	// then ends without the host.
	testenv.LearnSignedLease(t, "r4", k, ttl, a, standby)
	// The holder dies; another credential writes unsigned values.
	fctx, stopForging := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for fctx.Err() == nil {
			_, _ = kv.Put(fctx, "lease.r4", []byte("forger"))
			select {
			case <-fctx.Done():
			case <-time.After(ttl / 8):
			}
		}
	}()
	defer func() {
		stopForging()
		wg.Wait()
	}()
	time.Sleep(ttl / 4) // a forged value in place of the holder's
	began := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 6*ttl)
	defer cancel()
	l, err := standby.AcquireSignedLease(sctx, "r4", "B", k, nil)
	if err != nil {
		t.Fatalf("the next wait did not take the dead holder's host within 6 leases under unsigned values: %v", err)
	}
	t.Logf("the next wait took the host %s after it began (freed %q)", time.Since(began).Round(time.Millisecond), l.Freed())
}

// TestLapsedHolderTakesBackAForgeryStoredAsItTakes: a signed holder past
// its lease that finds its key gone takes it with a create; another
// credential's value stored between its read and its create made the
// create fail, and the holder took that for a rival that had taken the
// free key: ErrLeaseLost, its tenure ended (TestFaultsNATSFrozenSigned,
// at a frozen nats-server's thaw). It now reads what is there and takes
// an unsigned value back as a lapse. Here another credential deletes the
// key and writes an unsigned value on it, back to back, while the holder
// renews past its lease, again and again: never a lost lease.
func TestLapsedHolderTakesBackAForgeryStoredAsItTakes(t *testing.T) {
	const ttl = time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	forger := testenv.Queue(t, url, "forger", queue.Options{LeaseTTL: ttl})
	kv, err := forger.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	k := queue.NewMarkKey([]byte("seed of r5"))
	a, err := holder.AcquireSignedLease(ctx, "r5", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	fctx, stopForging := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for fctx.Err() == nil {
				_ = kv.Delete(fctx, "lease.r5")
			}
		}()
		go func() {
			defer wg.Done()
			for fctx.Err() == nil {
				_, _ = kv.Put(fctx, "lease.r5", []byte("forger"))
			}
		}()
	}
	defer func() {
		stopForging()
		wg.Wait()
	}()
	retaken := 0
	for i := range 12 {
		time.Sleep(ttl + 50*time.Millisecond) // past the lease
		r, err := a.Renew(ctx)
		if errors.Is(err, queue.ErrLeaseLost) {
			t.Fatalf("renewal %d past the lease, under another credential's deletes and values: %v", i+1, err)
		}
		if r {
			retaken++
		}
	}
	if retaken == 0 {
		t.Fatal("no renewal took the key back: the test proved nothing")
	}
	t.Logf("%d of 12 renewals past the lease took the key back", retaken)
}

// TestStandbyFollowsItsHolderIntoABucketMadeAgain: a standby counts no
// value naming a revision below the last renewal it honoured. A hosts
// bucket deleted and made again (by hand, or by a server that lost its
// store) numbers its revisions from 1: the holder's values there named
// revisions below that floor, the standby counted none of its renewals
// and took a live holder's host a lease later. A value stored below the
// floor can only be such a bucket's (revisions grow, a copy's too), so
// the floor starts again there.
func TestStandbyFollowsItsHolderIntoABucketMadeAgain(t *testing.T) {
	// From the holder's last renewal before the delete until its first
	// after the bucket is made again, no renewal of its can be stored:
	// past a lease, the standby's take is a real expiry. That is a
	// renewal period on each side of the remake (renewals come every
	// tenth of the lease here, a heartbeat a worker may have) and the
	// remake itself, which took over a second on a saturated machine: a
	// 2 s lease renewed every third of it failed so.
	const ttl = 5 * time.Second
	ctx := testenv.Context(t)
	url := testenv.NATS(t)
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	k := queue.NewMarkKey([]byte("seed of r6"))
	a, err := holder.AcquireSignedLease(ctx, "r6", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Revisions well past those of the bucket made again.
	kv, err := holder.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if _, err := kv.Put(ctx, "info.other", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	var lost atomic.Pointer[error]
	var renewed atomic.Int64 // when the holder's last renewal was answered (UnixNano)
	var wg sync.WaitGroup
	rctx, stopRenewing := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rctx.Err() == nil {
			_, err := a.Renew(rctx)
			if errors.Is(err, queue.ErrLeaseLost) {
				lost.Store(&err)
				return
			}
			if err == nil {
				renewed.Store(time.Now().UnixNano())
			}
			select {
			case <-rctx.Done():
			case <-time.After(ttl / 10):
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
			l, err := standby.AcquireSignedLease(sctx, "r6", "B", k, func(string) { once.Do(func() { close(waiting) }) })
			if err == nil {
				took <- l
				return
			}
			// A wait the deleted bucket ended starts again at once, and
			// may find the key absent from the bucket made again until
			// the holder's next renewal (every ttl/10): it leaves it to
			// the holder it saw renew (since hC21; the CI of the
			// thirtieth round met the take it made before).
		}
	}()
	defer func() {
		stopRenewing()
		stopStandby()
		wg.Wait()
	}()
	<-waiting
	time.Sleep(ttl)
	deleted := time.Now()
	before := time.Unix(0, renewed.Load())
	if err := holder.JetStream().DeleteStream(ctx, "KV_"+queue.HostsBucket); err != nil {
		t.Fatal(err)
	}
	testenv.Queue(t, url, "api", queue.Options{LeaseTTL: ttl}) // makes the bucket again, as an API does
	t.Logf("the bucket was made again %s after the delete, %s after the holder's last renewal before it",
		time.Since(deleted).Round(time.Millisecond), time.Since(before).Round(time.Millisecond))
	select {
	case l := <-took:
		t.Fatalf("the standby took the lease (freed %q) while its holder renewed it in the bucket made again (its last renewal answered %s before)",
			l.Freed(), time.Since(time.Unix(0, renewed.Load())).Round(time.Millisecond))
	case <-time.After(4 * ttl):
	}
	if err := lost.Load(); err != nil {
		t.Fatalf("the holder lost its lease: %v", *err)
	}
}
