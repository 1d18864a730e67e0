package queue

import (
	"context"
	"time"
)

// TakenFrom is the host's owner as read before this lease's take
// (AcquireOwnedLease): the worker's takeover is conditioned on it
// (TakeHostFrom), so that of two workers that both wrote the key, the
// first to take the host over holds it.
func (l *Lease) TakenFrom() HostOwner { return l.before }

// yieldToOwner reports whether Release must leave the key as it is,
// because the host's owner (Owners) is another instance that took the
// host over since this lease's take: a plain put landed over a take
// (putAsOwner, or a standby's put after beaten takes), and the other
// worker won. The loser's tenure ends when the owner's takeover makes
// the host's consumer again, often before the owner's first renewal, so
// the loser's value is still the key's last and its release freed the
// key: its next wait took it at once, its takeover made it the owner
// again and interrupted the order the owner ran
// (TestLoserOfAPutLeavesTheHostToItsOwner); a third standby could do
// the same. Left as it is, the key holds the loser's value until the
// owner's next renewal puts its own back (keepOwned), and the loser's
// next wait does not take that value back as its own (yielded). An
// owner unread (PostgreSQL away), this instance, or still the one read
// before the take (this lease's takeover never committed: a worker
// stopped while taking over) releases as before.
func (l *Lease) yieldToOwner(ctx context.Context) bool {
	if l.owners == nil || !l.beforeRead {
		return false
	}
	// At most half of what the release has, so that an owner that does
	// not answer leaves it its time.
	octx, cancel := ctx, context.CancelFunc(func() {})
	if d, ok := ctx.Deadline(); ok {
		octx, cancel = context.WithTimeout(ctx, time.Until(d)/2)
	}
	defer cancel()
	owner, err := l.owners.HostOwner(octx, l.host)
	if err != nil || owner.Instance == "" || owner.Instance == l.instance || owner == l.before {
		return false
	}
	l.q.yielded(l.host, l.instance)
	l.q.logger().Warn("the host lease is not released: another worker instance took the host over since this one took the lease (its owner where takeovers are recorded) while this worker's value was on the key; it puts its own back at its next renewal",
		"host", l.host, "instance", l.instance, "owner", owner.Instance)
	return true
}

// LeftToOwner reports whether instance left its value on host's lease
// key to the host's owner (yieldToOwner), and has not taken the lease
// since: a wait of instance that meets its own value on the key then
// waits for the owner's renewal to put the owner's back. A wait that
// meets it otherwise tried to take it back as its own lease left over,
// and failed.
func (q *Queue) LeftToOwner(host, instance string) bool {
	return q.knownLease(host).yielded == instance
}

// yielded records that instance left its value on host's lease key to
// the host's owner (yieldToOwner): until this process takes the lease
// again (instance ""), its waits read that value as a holder's, not as
// their own lease left over, which they would take back at once.
func (q *Queue) yielded(host, instance string) {
	q.changeLease(host, func(k *leaseKnown) { k.yielded = instance })
}
