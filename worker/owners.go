package worker

import (
	"context"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/worker/executor"
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
	// every: how often AwaitOwnerExit reads the owner again while it is
	// not the instance awaited, and reads /proc where a pidfd cannot be
	// waited on.
	every time.Duration
}

func (o storeOwners) HostOwner(ctx context.Context, host string) (queue.HostOwner, error) {
	ctx, cancel := context.WithTimeout(ctx, o.bound)
	defer cancel()
	owner, epoch, err := o.store.OwnerEpoch(ctx, host)
	return queue.HostOwner{Instance: owner, Epoch: epoch}, err
}

// OwnerExited reports whether host's owner is instance and its process
// has exited (ownerExited): queue.ExitedOwners.
func (o storeOwners) OwnerExited(ctx context.Context, host, instance string) bool {
	ctx, cancel := context.WithTimeout(ctx, o.bound)
	defer cancel()
	owner, err := o.store.HostOwner(ctx, host)
	return err == nil && owner.Instance == instance && ownerExited(owner)
}

// AwaitOwnerExit waits until host's owner is instance and its process
// has exited (executor.AwaitGone): queue.ExitWatchers. The owner is read
// again every o.every while it names another instance (the key's holder
// that a standby was refused may not have recorded its takeover yet),
// and not at all once it names instance, whose process is then awaited
// on a pidfd: nothing is read while a live holder keeps the host.
func (o storeOwners) AwaitOwnerExit(ctx context.Context, host, instance string) error {
	t := time.NewTicker(o.every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, o.bound)
		owner, err := o.store.HostOwner(rctx, host)
		cancel()
		if err == nil && owner.Instance == instance {
			return executor.AwaitGone(ctx, ownerProcess(owner), o.every)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ownerExited reports whether owner's process is known to have exited:
// recorded on this machine's boot and in this pid namespace, and not
// running (executor.Gone).
func ownerExited(owner postgres.Owner) bool {
	return executor.Gone(ownerProcess(owner))
}

// ownerProcess is owner's process as executor.Self identified it.
func ownerProcess(owner postgres.Owner) executor.Process {
	return executor.Process{PID: owner.PID, StartTime: owner.Start, BootID: owner.Boot, PidNS: owner.PidNS}
}

func (o storeOwners) ConfirmOwner(ctx context.Context, host, instance string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, o.bound)
	defer cancel()
	return o.store.ConfirmOwner(ctx, host, instance)
}
