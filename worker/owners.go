package worker

import (
	"context"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
)

// storeOwners is the host's owner record as its lease reads and confirms
// it (queue.Owners): PostgreSQL's hosts row, which every takeover writes
// before it runs anything. Each statement is bounded (a renewal
// interval): a PostgreSQL that does not answer holds a renewal, or a
// standby's take, up no longer than that, and the lease stays in doubt
// (the take is not sent) until the next try.
type storeOwners struct {
	store Store
	bound time.Duration
}

func (o storeOwners) HostOwner(ctx context.Context, host string) (queue.HostOwner, error) {
	ctx, cancel := context.WithTimeout(ctx, o.bound)
	defer cancel()
	owner, epoch, err := o.store.OwnerEpoch(ctx, host)
	return queue.HostOwner{Instance: owner, Epoch: epoch}, err
}

func (o storeOwners) ConfirmOwner(ctx context.Context, host, instance string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, o.bound)
	defer cancel()
	return o.store.ConfirmOwner(ctx, host, instance)
}
