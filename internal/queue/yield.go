package queue

import (
	"context"
	"time"
)

// TookOver records that this lease's worker has made its instance the
// host's owner where takeovers are recorded (PostgreSQL's hosts.owner,
// TakeHost). From then on, an owner named there that is not this
// instance took the host over after this one, and Release leaves the key
// to it (yieldToOwner). Call it from the goroutine that releases.
func (l *Lease) TookOver() { l.tookOver = true }

// yieldToOwner reports whether Release must leave the key as it is,
// because the host's owner (CheckOwner) is another instance that took
// the host over after this lease's worker did (TookOver). That happens
// only when a plain put landed over a take (keepOwned): the loser's
// tenure ends when the owner's takeover makes the host's consumer again,
// often before the owner's first renewal, so the loser's value is still
// the key's last and its release freed the key. Its next wait took it at
// once, its takeover made it the owner again and interrupted the order
// the owner ran (TestLoserOfAPutLeavesTheHostToItsOwner); a third
// standby could do the same. Left as it is, the key holds the loser's
// value until the owner's next renewal puts its own back (keepOwned),
// and the loser's next wait does not take that value back as its own
// (yielded). An owner unread (PostgreSQL away) releases as before: the
// owner's takeover has nothing to fear from a standby that cannot take
// the host over either.
func (l *Lease) yieldToOwner(ctx context.Context) bool {
	if !l.tookOver || l.owner == nil {
		return false
	}
	// At most half of what the release has, so that an owner that does
	// not answer leaves it its time.
	octx, cancel := ctx, context.CancelFunc(func() {})
	if d, ok := ctx.Deadline(); ok {
		octx, cancel = context.WithTimeout(ctx, time.Until(d)/2)
	}
	defer cancel()
	owner, err := l.owner(octx)
	if err != nil || owner == "" || owner == l.instance {
		return false
	}
	l.q.yielded(l.host, l.instance)
	l.q.logger().Warn("the host lease is not released: another worker instance took the host over after this one (PostgreSQL's hosts.owner) while this worker's value was on the key; it puts its own back at its next renewal",
		"host", l.host, "instance", l.instance, "owner", owner)
	return true
}

// yielded records that instance left its value on host's lease key to
// the host's owner (yieldToOwner): until this process takes the lease
// again (instance ""), its waits read that value as a holder's, not as
// their own lease left over, which they would take back at once.
func (q *Queue) yielded(host, instance string) {
	k := q.knownLease(host)
	k.yielded = instance
	q.leases.Store(host, k)
}
