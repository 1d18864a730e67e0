package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// HostOwner is a host's owner where its takeovers are recorded
// (Owners), with its epoch, which moves on at every takeover and every
// confirmed plain write.
type HostOwner struct {
	Instance string
	Epoch    int64
}

// Owners is where a host's takeovers are recorded, the worker's
// PostgreSQL (hosts.owner, owner_epoch): every worker that takes a host
// over makes itself the owner there before it runs anything, on
// condition that the owner is still the one it read before it wrote the
// lease key (TakeHostFrom). A forger on the bus can write the key; it can
// write neither of these.
type Owners interface {
	// HostOwner reads host's owner.
	HostOwner(ctx context.Context, host string) (HostOwner, error)
	// ConfirmOwner moves host's epoch on while instance owns it, and
	// reports whether it does.
	ConfirmOwner(ctx context.Context, host, instance string) (bool, error)
}

// ExitedOwners is what Owners may tell besides: whether host's owner is
// instance and its process is known to have exited (AcquireOwnedLease).
type ExitedOwners interface {
	OwnerExited(ctx context.Context, host, instance string) bool
}

// ownerExited reports whether owners tell that host's owner is instance,
// a process known to have exited; false when they cannot tell.
func ownerExited(ctx context.Context, owners Owners, host, instance string) bool {
	x, ok := owners.(ExitedOwners)
	return ok && x.OwnerExited(ctx, host, instance)
}

// CheckOwner has Renew ask owners who owns the host before it takes its
// key back with a plain write (putAsOwner): the write is sent only while
// the owner is this lease's instance, and another name ends the tenure
// (ErrLeaseLost). Without it, a lapsed key is taken back only with
// writes on the revision read. Set before the first renewal;
// AcquireOwnedLease sets it.
func (l *Lease) CheckOwner(owners Owners) { l.owners = owners }

// retake writes this lease's value on its key past the lease: a key
// found gone (read 0) or holding, as revision read, a value its host's
// key did not sign for another instance (Renew's lapse). The write is
// conditioned on what was read, so that it does not overwrite a
// standby's take of the lapsed key, a lost lease.
//
// Another credential storing messages on the key more often than this
// worker's round trip to the server beats every such write: a holder
// frozen past its lease and thawed while it wrote stayed in doubt, its
// claims paused, and its host ran nothing for as long as the writes
// came (TestHolderTakesItsHostBackFromAForgerFasterThanItsRoundTrip). So,
// as a standby does (lostTakes), from the lostTakes-th beaten write in a
// row it writes with a plain put, and only once the host's owner, read
// after the key, is still this instance. What that put can overwrite
// that the conditioned write would not is what was stored on the key
// between the read of the owner and the put's arrival: another
// credential's writes, or a standby's take whose tenure has not yet
// recorded itself as the host's owner, and so has run nothing (it makes
// itself the owner before it consumes). That standby's owner record
// then refuses this worker's next claim, which ends its tenure, and its
// next renewal finds a value its host's key signed for another
// instance, a lost lease: one of the two takes the host again as a
// standby.
// A holder that has begun its tenure, its take recorded as the owner,
// is never overwritten: the owner names it, and this lease is lost.
// Without a key nothing tells a forger from a rival: no put.
func (l *Lease) retake(ctx context.Context, read uint64) (uint64, error) {
	if l.lost >= lostTakes && l.owners != nil && l.k != nil {
		rev, err := l.putAsOwner(ctx, max(read, l.q.lastRevision(ctx, l.k, l.rev, l.pastRead())), "it took the host over while this lease lapsed")
		if err == nil {
			l.q.logTakenByPut(l.host, l.instance, "this holder's conditioned take-backs of its lapsed lease", l.lost)
			l.lost = 0
		}
		return rev, err
	}
	var rev uint64
	var err error
	if read == 0 {
		rev, err = l.kv().Create(ctx, l.key, l.value(l.q.lastRevision(ctx, l.k, l.rev, l.pastRead())))
	} else {
		rev, err = l.kv().Update(ctx, l.key, l.value(read), read)
	}
	switch {
	case err == nil:
		l.lost = 0
	case raced(err):
		l.beaten()
	}
	return rev, err
}

// pastRead is the bound of lastRevision's read before a take-back past
// the lease: half of it.
func (l *Lease) pastRead() time.Duration {
	_, slow := contactProbes(l.q.opts.LeaseTTL)
	return slow
}

// beaten counts a take-back of the lapsed key that another writer's
// message beat (retake).
func (l *Lease) beaten() {
	l.lost++
	l.q.logger().Debug("a take-back of the lapsed host lease was beaten by another writer", "host", l.host, "instance", l.instance, "lost", l.lost)
}

// takenWhileFree judges a key that Renew found gone past the lease and
// that its take found written meanwhile: a value its host's key signed
// for another instance is a lost lease; one it did not sign (or a copy)
// is taken back as a lapse, on the revision read, as Renew takes back
// such a value found in place of its own. A frozen nats-server expires
// the key at its thaw and then stores what waited in its sockets, another
// credential's writes among them: the holder took one for a rival that
// had taken the free key, ended its tenure, and its standby took the host
// once the forger stopped (TestFaultsNATSFrozenSigned).
func (l *Lease) takenWhileFree(ctx context.Context, renewErr error) (bool, error) {
	lost := fmt.Errorf("%w: taken while it was free: %v", ErrLeaseLost, renewErr)
	if l.k == nil {
		return false, lost
	}
	e, err := l.kv().Get(ctx, l.key)
	if err != nil {
		// Gone again (a delete stored meanwhile), or unread: in doubt,
		// and the next renewal judges it again.
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			l.beaten()
		}
		return false, fmt.Errorf("renew lease: take the lapsed lease again (its key was gone, then written): %w", err)
	}
	r, trust := trustLease(l.key, e.Value(), l.k, sinceRev(l.rev, e.Revision()), true)
	if trust == leaseSigned && r.instance != l.instance {
		return false, fmt.Errorf("%w: taken while it was free by %s", ErrLeaseLost, r.instance)
	}
	// Its own value (its own take, whose answer was lost), or one its
	// host's key did not sign.
	sent := time.Now()
	rev, err := l.retake(ctx, e.Revision())
	if err != nil {
		return false, fmt.Errorf("renew lease: take the lapsed lease back from a value not written with this host's NATS credential: %w", err)
	}
	if trust != leaseSigned {
		l.q.logger().Error("the host lease had lapsed and was written by another NATS credential than this host's: taken back",
			"host", l.host, "instance", l.instance, "written_as", r.instance)
	}
	l.wrote(rev, sent)
	return true, nil
}

// keepOwned judges a value its host's key signed for another instance,
// holder, stored on the key as revision read while this lease cannot
// have expired. A standby takes only a key it is due (released, or a
// lease past the last renewal it saw), which this one is not, so that
// value was put: a standby's take after lostTakes beaten ones
// (AcquireSignedLease), or a lapsed holder's take-back (retake), sent
// before its writer could see this lease's take or renewal. Two instances then believe they hold the host, and
// judged by the key alone both lost it: the one whose take the put
// overwrote found the other's value at its next renewal, and the other
// found its claims refused by PostgreSQL's fence, since the first had
// taken the host over there (TestPutOverATakeLeavesTheHostToItsOwner).
// The host's owner (CheckOwner: hosts.owner, which the last worker to
// take the host over wrote before it ran anything) says which of the two
// holds it: while it names this instance the key is taken back with a
// put, and the other's next renewal finds this value, within its own
// lease, while the owner names this instance: lost. Another name is a
// lost lease; an owner unread leaves the lease in doubt until the next
// renewal.
func (l *Lease) keepOwned(ctx context.Context, read uint64, holder string) (bool, error) {
	sent := time.Now()
	rev, err := l.putAsOwner(ctx, max(l.rev, read), "now held by "+holder)
	if err != nil {
		return false, fmt.Errorf("renew lease: take the lease back from %s, which put its own over it: %w", holder, err)
	}
	l.q.logger().Error("the host lease was written over by another worker instance of this host while this worker holds it and owns the host (PostgreSQL's hosts.owner): taken back; the other's claims are refused",
		"host", l.host, "instance", l.instance, "written_as", holder)
	l.wrote(rev, sent)
	l.lost = 0
	return false, nil
}

// putAsOwner writes this lease's value, at revision floor, over whatever
// the key holds, with a plain put, once the host's owner (Owners) names
// this instance: the only fence such a put has against an honest rival
// (retake, keepOwned). Another owner is a lost lease, said with why.
//
// The put may land over a standby's take sent after that read, and the
// standby, having read the owner before its take, goes on to take the
// host over: both believed they held it, and the orders this one claimed
// meanwhile were ended interrupted by the standby's takeover. So the
// put is confirmed (ConfirmOwner) before the renewal answers, and claims
// wait for it: the first of the confirmation and the standby's
// conditioned takeover (TakeHostFrom) to commit holds the host, and the
// other claims nothing (TestPutOverATakeLeavesTheHostToItsOwner).
func (l *Lease) putAsOwner(ctx context.Context, floor uint64, why string) (uint64, error) {
	owner, err := l.owners.HostOwner(ctx, l.host)
	if err != nil {
		return 0, fmt.Errorf("read the host's owner before a plain write: %w", err)
	}
	if owner.Instance != l.instance {
		return 0, fmt.Errorf("%w: %s (the host's owner is %q)", ErrLeaseLost, why, owner.Instance)
	}
	rev, err := l.kv().Put(ctx, l.key, l.value(floor))
	if err != nil {
		return 0, err
	}
	l.unconfirmed = true
	return rev, l.confirm(ctx)
}

// confirm moves the host's epoch on while this instance owns it
// (putAsOwner): another owner is a lost lease; an unanswered one leaves
// the lease in doubt, and the next renewal confirms it first.
func (l *Lease) confirm(ctx context.Context) error {
	ok, err := l.owners.ConfirmOwner(ctx, l.host, l.instance)
	if err != nil {
		return fmt.Errorf("confirm this instance the host's owner after a plain write of its lease: %w", err)
	}
	l.unconfirmed = false
	if !ok {
		return fmt.Errorf("%w: another worker instance took the host over (its owner where takeovers are recorded) before this one confirmed the plain write of its lease", ErrLeaseLost)
	}
	return nil
}
