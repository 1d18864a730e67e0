package worker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestPutOverATakeLeavesTheHostToItsOwner: a holder past its
// lease, whose conditioned take-backs a forger beat, takes its key back
// with a plain put while PostgreSQL still names it the host's owner
// (hC23's retake). A standby's take landing between that read of the
// owner and the put is overwritten (putOverATake). Before, the holder's
// renewal answered at once, and its worker claimed orders, while the
// standby went on to take the host over in PostgreSQL (TakeHost, its
// takeover's first statement) and ended them interrupted: both believed
// they held the host until the next renewal settled it (hD24). Now the
// holder's renewal answers once it confirmed the put there
// (ConfirmOwner), which makes it the owner that decides, and the
// standby's takeover, conditioned on the owner it read before its take
// (TakeHostFrom), is refused: it claims nothing, and the holder keeps
// the host.
func TestPutOverATakeLeavesTheHostToItsOwner(t *testing.T) {
	ctx := testenv.Context(t)
	p := putOverATake(t, "r8", false)
	if p.err != nil {
		t.Fatalf("the holder, still the host's owner, lost its lease: %v", p.err)
	}
	if !p.retaken {
		t.Fatal("the holder's key taken back, not said to have lapsed")
	}
	// The standby's takeover, as its tenure begins with it.
	if err := p.takeOver(p.b, "B"); !errors.Is(err, postgres.ErrHostTakenMeanwhile) {
		t.Fatalf("the standby took the host over after the holder's renewal answered (its worker claims from then on, and the takeover ends what it claimed interrupted): %v", err)
	}
	// Its tenure ends: its release leaves the key to the holder.
	if err := p.b.Release(ctx); err != nil {
		t.Logf("the standby's release: %v", err)
	}
	p.ownerKeeps(t, p.holderQ, p.a, p.b, "A", "its put over the standby's take")
}

// TestLoserOfAPutLeavesTheHostToItsOwner: putOverATake's interleaving
// with the standby B's takeover committed before the holder A's put is
// confirmed: A's renewal loses the lease at the confirmation (before, it
// answered, and A claimed orders that B's takeover ended interrupted).
// A's tenure then ends, before B's first renewal: A's value is the key's
// last. Before, A's worker released it at the end of its tenure, and its
// next wait, 0.1 s later, took the free key at once and took the host
// over in PostgreSQL, its takeover interrupting the order B ran and
// killing its processes: B, the host's owner, lost its lease at its next
// renewal to the loser racing back. A leaves the key to B, whose renewal
// puts its own value back, and waits as its standby.
func TestLoserOfAPutLeavesTheHostToItsOwner(t *testing.T) {
	const host = "r10"
	ctx := testenv.Context(t)
	p := putOverATake(t, host, true)
	if !errors.Is(p.err, queue.ErrLeaseLost) {
		t.Fatalf("the holder's renewal over the standby's takeover answered (retaken %t, %v): its worker claims orders the owner's takeover ended interrupted", p.retaken, p.err)
	}
	t.Logf("the holder lost its lease at its put's confirmation: %v", p.err)
	p.a.CheckOwner(p.owners)
	p.b.CheckOwner(p.owners)
	// A's tenure ends: its worker's release, then its next wait.
	if err := p.a.Release(ctx); err != nil {
		t.Logf("the loser's release: %v", err)
	}
	// What its worker's standby line names: the owner its value is left
	// to, not its own earlier lease.
	if !p.holderQ.LeftToOwner(host, "A") {
		t.Error("the loser left its value on the key to the owner, and its Queue does not say so (LeftToOwner)")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	took := make(chan *queue.Lease, 1)
	go func() {
		l, err := p.holderQ.AcquireOwnedLease(wctx, host, "A", p.k, p.owners, nil)
		if err != nil && wctx.Err() == nil {
			t.Errorf("the loser's wait: %v", err)
		}
		took <- l
	}()
	// B renews every third of a lease, as its worker's beat does, twice.
	for i := range 2 {
		time.Sleep(p.ttl / 3)
		select {
		case l := <-took:
			if l == nil {
				t.FailNow()
			}
			// Its worker's takeover: it owns the host in PostgreSQL.
			terr := p.takeOver(l, "A")
			_, err := p.b.Renew(ctx)
			t.Fatalf("the loser took the host back from its owner after its release (freed %q, before the owner's renewal %d; its takeover: %v); the owner's renewal then: %v", l.Freed(), i+1, terr, err)
		default:
		}
		if _, err := p.b.Renew(ctx); err != nil {
			t.Fatalf("B, the host's owner, lost its lease at its renewal %d: %v", i+1, err)
		}
	}
	if h, err := p.holderQ.LeaseHolder(ctx, host); err != nil || h != "B" {
		t.Fatalf("the key names %q (%v), want the host's owner, B", h, err)
	}
	cancel()
	if l := <-took; l != nil {
		t.Fatal("the loser took the host from its owner")
	}
}

// putOver is putOverATake's interleaving played out: A's put over B's
// take on the key, and A's renewal's answer (retaken, err).
type putOver struct {
	ownedLeaseRig
	ttl               time.Duration
	holderQ, standbyQ *queue.Queue
	a, b              *queue.Lease
	retaken           bool
	err               error
}

// putOverATake plays out the interleaving: holder A past its lease,
// whose conditioned take-backs a forger beat, puts its key back once
// PostgreSQL named it the host's owner (hC23's retake), over standby B's
// honest take, made between A's read of the owner and its put; with
// takenOver, B takes the host over in PostgreSQL (TakeHostFrom, its
// takeover's first statement) before A's put is sent.
func putOverATake(t *testing.T, host string, takenOver bool) putOver {
	const ttl = 2 * time.Second
	ctx := testenv.Context(t)
	r := newOwnedLeaseRig(t, host)
	// The holder's round trip is longer than three of the forger's writes
	// (hC23's TestHolderTakesItsHostBackFromAForgerFasterThanItsRoundTrip).
	slow := testenv.SlowPath(t, strings.TrimPrefix(r.url, "nats://"), 40*time.Millisecond)
	holderQ := testenv.Queue(t, "nats://"+slow, "holder", queue.Options{LeaseTTL: ttl})
	standbyQ := testenv.Queue(t, r.url, "standby", queue.Options{LeaseTTL: ttl})
	fnc, k := r.forger, r.k

	a, err := holderQ.AcquireOwnedLease(ctx, host, "A", k, r.owners, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.takeOver(a, "A"); err != nil {
		t.Fatal(err)
	}
	var (
		b           *queue.Lease
		stopForging func()
	)
	a.CheckOwner(readHook{r.owners, func(ctx context.Context) {
		if b != nil {
			return
		}
		// The window: the owner is read, the put not yet sent. The
		// forger stops, so that the standby's take is a conditioned
		// write, an honest one.
		stopForging()
		wctx, cancel := context.WithTimeout(ctx, 10*ttl)
		defer cancel()
		var err error
		if b, err = standbyQ.AcquireOwnedLease(wctx, host, "B", k, r.owners, nil); err != nil {
			t.Errorf("the standby did not take the lapsed key: %v", err)
		} else if takenOver {
			if err := r.takeOver(b, "B"); err != nil {
				t.Errorf("the standby's takeover: %v", err)
			}
		}
	}})
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
		if b != nil {
			if h, err := holderQ.LeaseHolder(ctx, host); err != nil || h != "A" {
				t.Fatalf("after the holder's put the key names %q (%v), want A", h, err)
			}
			return putOver{ownedLeaseRig: r, ttl: ttl, holderQ: holderQ, standbyQ: standbyQ, a: a, b: b, retaken: retaken, err: err}
		}
		if errors.Is(err, queue.ErrLeaseLost) {
			t.Fatalf("the holder, still the host's owner, lost its lease: %v", err)
		}
		if time.Since(began) > 6*ttl {
			t.Fatalf("the holder did not take its key back with a put within 6 leases (last: %v)", err)
		}
		time.Sleep(ttl / 3)
	}
}

// readHook is owners whose every read of the owner calls read before it
// answers: a test acts between a lease's read and its write.
type readHook struct {
	queue.Owners
	read func(ctx context.Context)
}

func (h readHook) HostOwner(ctx context.Context, host string) (queue.HostOwner, error) {
	o, err := h.Owners.HostOwner(ctx, host)
	if err == nil {
		h.read(ctx)
	}
	return o, err
}

// TestTwoStandbysPutsLeaveTheHostToItsOwner: two standbys of a released
// host, each of whose conditioned takes a forger beat three times, take
// the key with plain puts (hA22's), neither having read the other's: B's
// put is held on its way to the server, C's read of the bucket's last
// sequence (the revision its put names) too, until B's put is stored;
// C's then lands over it. Both standbys hold a lease, the key names C in
// a value naming a revision after B's (not a copy, which B would take
// back: hE20), and each takes the host over in PostgreSQL, B last.
// Judged by the key alone both lost the host: B's next renewal found C's
// value, a lost lease, and C's claims were refused by PostgreSQL's
// fence. PostgreSQL's owner is the arbiter: B takes its key back, and C
// loses its lease.
func TestTwoStandbysPutsLeaveTheHostToItsOwner(t *testing.T) {
	const (
		// Long enough that B's put, held until C's read, is still within
		// its lease when the test goes on.
		ttl  = 4 * time.Second
		host = "r9"
	)
	ctx := testenv.Context(t)
	r := newOwnedLeaseRig(t, host)
	target := strings.TrimPrefix(r.url, "nats://")
	holderQ := testenv.Queue(t, r.url, "holder", queue.Options{LeaseTTL: ttl})
	fnc, k := r.forger, r.k
	// B's put is a plain PUB on the lease's subject (its takes
	// conditioned on a revision are HPUBs, with their headers); C's read
	// of the bucket's last sequence is a request for the stream's info,
	// held once C has lost its third take, when its next take is a put.
	put := []byte("PUB $KV." + queue.HostsBucket + ".lease." + host + " ")
	bAddr, bHolding, bRelease := testenv.HeldSlowPath(t, target, 40*time.Millisecond, func(b []byte) bool {
		return bytes.HasPrefix(b, put) || bytes.Contains(b, append([]byte("\n"), put...))
	})
	var armed atomic.Bool
	info := []byte("STREAM.INFO.KV_" + queue.HostsBucket)
	cAddr, cHolding, cRelease := testenv.HeldSlowPath(t, target, 40*time.Millisecond, func(b []byte) bool {
		return armed.Load() && bytes.Contains(b, info)
	})
	var cLog testenv.LogBuffer
	bq := testenv.Queue(t, "nats://"+bAddr, "standby B", queue.Options{LeaseTTL: ttl})
	// Armed as C logs its third beaten take, before it goes on.
	cq := testenv.Queue(t, "nats://"+cAddr, "standby C", queue.Options{LeaseTTL: ttl,
		Logger: slog.New(onRecord{slog.NewTextHandler(&cLog, &slog.HandlerOptions{Level: slog.LevelDebug}), func(r slog.Record) {
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "lost" && a.Value.Int64() >= 3 && strings.Contains(r.Message, "beaten") {
					armed.Store(true)
				}
				return true
			})
		}})})

	a, err := holderQ.AcquireOwnedLease(ctx, host, "A", k, r.owners, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.takeOver(a, "A"); err != nil {
		t.Fatal(err)
	}
	// A first wait of each learns that the host's lease is signed
	// (hA22's TestStandbyTakesTheHostFromAForgerFasterThanItsRoundTrip).
	testenv.LearnSignedLease(t, host, k, ttl, a, bq, cq)

	stopForging := testenv.ForgeLease(ctx, fnc, host, "A")
	defer stopForging()
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	acquire := func(q *queue.Queue, instance string) <-chan *queue.Lease {
		took := make(chan *queue.Lease, 1)
		go func() {
			l, err := q.AcquireOwnedLease(ctx, host, instance, k, r.owners, nil)
			if err != nil {
				t.Errorf("standby %s: %v", instance, err)
			}
			took <- l
		}()
		return took
	}
	bTook, cTook := acquire(bq, "B"), acquire(cq, "C")
	select {
	case <-bHolding:
	case l := <-bTook:
		t.Fatalf("standby B took the host (%v) without a plain put", l != nil)
	case <-time.After(12 * ttl):
		t.Fatal("standby B sent no plain put within 12 leases of the release, under a forger writing faster than its round trip")
	}
	select {
	case <-cHolding:
	case l := <-cTook:
		t.Fatalf("standby C took the host (%v) before its put's read", l != nil)
	case <-time.After(12 * ttl):
		t.Fatal("standby C read no revision after a third beaten take within 12 leases of the release")
	}
	// Nothing else is written on the key from now.
	stopForging()
	held := time.Now()
	bRelease()
	lb := <-bTook
	cRelease()
	lc := <-cTook
	if lb == nil || lc == nil {
		t.FailNow()
	}
	t.Logf("both standbys took the host, B's put released %s before C's read", time.Since(held).Round(time.Millisecond))
	if !strings.Contains(cLog.String(), "took the host lease with a plain write") {
		t.Fatal("standby C's take was not a plain put")
	}
	if h, err := holderQ.LeaseHolder(ctx, host); err != nil || h != "C" {
		t.Fatalf("after both puts the key names %q (%v), want C", h, err)
	}
	// Both takeovers, each conditioned on the owner its worker read
	// before its put, A: B's commits first, and C's is refused (before,
	// both committed, and both believed they held the host until their
	// next renewals); then their renewals, as their workers' beats send
	// them.
	if err := r.takeOver(lb, "B"); err != nil {
		t.Fatal(err)
	}
	if err := r.takeOver(lc, "C"); !errors.Is(err, postgres.ErrHostTakenMeanwhile) {
		t.Fatalf("standby C took the host over after B did: %v", err)
	}
	r.ownerKeeps(t, holderQ, lb, lc, "B", "C's put over its own")
}

// onRecord is a slog handler that calls f with each record it handles,
// before h does: a test acts at the instant a line is logged.
type onRecord struct {
	slog.Handler
	f func(slog.Record)
}

func (h onRecord) Handle(ctx context.Context, r slog.Record) error {
	h.f(r)
	return h.Handler.Handle(ctx, r)
}

// ownedLeaseRig is a host's lease under a forger, with PostgreSQL's
// record of the host's owner: a NATS server, a connection of another
// credential's to write the key with, the host's key, and the owner as
// a worker reads and confirms it (owners) and writes it (its takeover's
// TakeHostFrom).
type ownedLeaseRig struct {
	host   string
	url    string
	forger *nats.Conn
	k      queue.MarkKey
	store  *postgres.Store
	owners queue.Owners
}

func newOwnedLeaseRig(t *testing.T, host string) ownedLeaseRig {
	store, _ := testenv.Store(t, testenv.Postgres(t))
	r := ownedLeaseRig{host: host, url: testenv.NATS(t), k: queue.NewMarkKey([]byte("seed of " + host)), store: store, owners: storeOwners{store}}
	var err error
	if r.forger, err = queue.Connect(r.url, "forger"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.forger.Close)
	return r
}

// takeOver takes the host over for instance, l's, as its worker's takeover
// does: on condition that the owner is still the one read before l was
// taken.
func (r ownedLeaseRig) takeOver(l *queue.Lease, instance string) error {
	from := l.TakenFrom()
	_, _, err := r.store.TakeHostFrom(context.Background(), r.host, "test", postgres.Owner{Instance: instance}, from.Instance, from.Epoch)
	return err
}

// storeOwners is the host's owner in PostgreSQL as a worker's lease
// reads and confirms it (queue.Owners).
type storeOwners struct{ store *postgres.Store }

func (o storeOwners) HostOwner(ctx context.Context, host string) (queue.HostOwner, error) {
	owner, epoch, err := o.store.OwnerEpoch(ctx, host)
	return queue.HostOwner{Instance: owner, Epoch: epoch}, err
}

func (o storeOwners) ConfirmOwner(ctx context.Context, host, instance string) (bool, error) {
	return o.store.ConfirmOwner(ctx, host, instance)
}

// ownerKeeps checks the verdict once the worker of lease owner,
// instance name, took the host over last in PostgreSQL while the key
// holds other's put, as what says: owner's renewal takes its key back,
// other's loses its lease, and the key (read through q) names the owner.
// Judged by the key alone, owner lost its lease, and PostgreSQL's fence
// refused other's claims: nobody ran the host.
func (r ownedLeaseRig) ownerKeeps(t *testing.T, q *queue.Queue, owner, other *queue.Lease, name, what string) {
	ctx := testenv.Context(t)
	owner.CheckOwner(r.owners)
	other.CheckOwner(r.owners)
	if _, err := owner.Renew(ctx); err != nil {
		t.Fatalf("%s, which owns the host in PostgreSQL, lost its lease to %s (the other's claims are refused by the fence: nobody runs the host): %v", name, what, err)
	}
	_, err := other.Renew(ctx)
	if !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("the other worker, not the host's owner, renewed its lease over %s's: %v", name, err)
	}
	t.Logf("the other worker lost its lease: %v", err)
	if _, err := owner.Renew(ctx); err != nil {
		t.Fatalf("%s's next renewal: %v", name, err)
	}
	if h, err := q.LeaseHolder(ctx, r.host); err != nil || h != name {
		t.Fatalf("the key names %q (%v), want the host's owner, %s", h, err, name)
	}
}
