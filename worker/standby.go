package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
)

// acquireLease takes the host's lease, waiting as a standby while another
// worker holds it. While it waits it reports itself under the host's
// standby key, so that the hosts listing shows that a worker stands by
// (and which one), and removes the report once it holds the lease or
// stops.
func (w *Worker) acquireLease(ctx context.Context) (*queue.Lease, error) {
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var rep standbyReport // the last one written; zero while none was
	defer func() {
		stop()
		wg.Wait()
		if rep.rev == 0 {
			return
		}
		// Briefly: the lease just taken waits for it. A report this
		// cannot remove (NATS away, or another standby reported since)
		// expires with the bucket's TTL; one that names the holder
		// counts for nothing (queue.Workers).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if err := w.standbyGone(rctx, rep); err != nil {
			w.logger.Debug("remove standby report", "error", err)
		}
	}()
	w.heldElsewhere(ctx)
	// A lapsed lease is taken back with a plain write only while
	// PostgreSQL still names this worker the host's owner (queue's
	// retake), and the write is confirmed there before claims go on; a
	// take is conditioned there on the owner read before it
	// (takeover). The lease's reads and confirmations are bounded by a
	// renewal's pace, which they hold up; the wait's reads, before its
	// takes, by the lease: nothing renews meanwhile, and the takeover is
	// conditioned on what they said. Bounded by a renewal's pace, they
	// failed against a PostgreSQL just restarted on a loaded machine,
	// try after try, and the host ran nothing meanwhile
	// (TestWorkerTakesItsHostFromASlowOwnerRead).
	owners := storeOwners{store: w.store, bound: queue.RenewEvery(w.opts.Heartbeat, w.q.LeaseTTL())}
	waitOwners := storeOwners{store: w.store, bound: w.q.LeaseTTL(), every: w.opts.Heartbeat}
	lease, err := w.q.AcquireOwnedLease(ctx, w.opts.Host, w.opts.Instance, w.opts.ClaimMarkKey, waitOwners, func(holder string) {
		switch {
		case holder != w.opts.Instance:
		case w.q.LeftToOwner(w.opts.Host, w.opts.Instance):
			// Its own value, left on the key to the worker that took the
			// host over from it (queue's yieldToOwner), until that
			// owner's renewal puts its own back.
			holder = "the host's owner in PostgreSQL (this worker's value is left on the key to it)"
		default:
			// Its own lease of an earlier tenure, whose release did not
			// land, which the wait tried to take back: another write
			// came first, or NATS did not answer. Named the owner's
			// before, as if it had yielded (docs/decisions.md, hD25).
			holder = "this worker's own earlier lease (left on the key; taking it back failed)"
		}
		w.logger.Info("host lease held by another worker; waiting as standby", "holder", holder)
		w.status(fmt.Sprintf("standby: the lease of host %s is held by %s", w.opts.Host, holder))
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep = w.standbyBeat(sctx)
		}()
	})
	if err == nil {
		lease.CheckOwner(owners)
	}
	if err == nil && lease.Freed() != "" {
		w.logger.Info("host lease taken after waiting as standby", "freed", lease.Freed())
	}
	return lease, err
}

// heldElsewhere tells the queue when the host's owner in PostgreSQL is
// another instance, which may still hold its lease though the key is
// absent (a NATS server's clock stepped forward past the lease, the hosts
// bucket made again): the wait then leaves an absent key to it for a
// lease (queue.HeldElsewhere). A worker started in such a moment took the
// key at once, and its takeover interrupted the order the live holder ran
// (TestWorkerStartedOnAnAbsentLeaseLeavesTheHostToItsHolder). Without an
// answer within a heartbeat (a PostgreSQL that does not answer must not
// keep the standby from waiting and reporting) nothing is guessed: the
// wait reads the owner before its take anyway, and that read says
// whether an absent key is another's (queue.OwnerUnread). Taken to be
// another's, a worker's own lease, expired after a release that did not
// take, was left to "another" holder for a lease (docs/decisions.md,
// hF25). A host this instance owns, or nobody ever did, is
// taken at once, as is a key its holder released (a clean stop), and one
// whose owner was a process of this machine's boot and of this pid
// namespace that has exited (executor.Gone): a worker or serve restarted
// on its machine after a crash, or after a clean stop whose release the
// bucket no longer holds, waited a lease for a holder that cannot renew
// (TestWorkerRestartedAfterItsOwnerExitedTakesTheHostAtOnce). An owner in
// another container of the machine is none of those
// (TestWorkerStartedBesideALiveOwnerInAnotherPidNamespaceLeavesItTheHost).
func (w *Worker) heldElsewhere(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, w.opts.Heartbeat)
	defer cancel()
	owner, err := w.store.HostOwner(qctx, w.opts.Host)
	switch {
	case err != nil:
		w.q.OwnerUnread(w.opts.Host)
	case owner.Instance != "" && owner.Instance != w.opts.Instance &&
		!ownerExited(owner):
		w.q.HeldElsewhere(w.opts.Host)
	}
}

// standbyReport is what a standby knows of its report in the hosts
// bucket: the revision of the last one the server confirmed (0 while
// none was), whether the last one sent went unanswered, and what it
// said (the removal may write it again: standbyGone).
type standbyReport struct {
	rev uint64
	// unsure: the last report written was not confirmed (its answer came
	// after its bound, or never): the server may hold it under a
	// revision the standby never learned.
	unsure bool
	info   queue.HostInfo
}

// standbyBeat reports this worker as the host's standby every heartbeat
// (every third of the lease when that is shorter) until ctx ends, and
// returns what it knows of its last report.
func (w *Worker) standbyBeat(ctx context.Context) standbyReport {
	var rep standbyReport
	since := time.Now()
	// Under the bucket's TTL, read again every minute as the holder
	// does (beat): a report every heartbeat under a lease the API
	// shortened expired between reports, and the host's standby came
	// and went in the hosts listing.
	every := w.opts.Heartbeat
	t := time.NewTicker(every)
	defer t.Stop()
	checked := time.Time{}
	for {
		if time.Since(checked) > time.Minute {
			checked = time.Now()
			if ttl, err := w.q.BucketTTL(ctx); err == nil && queue.RenewEvery(w.opts.Heartbeat, ttl) != every {
				every = queue.RenewEvery(w.opts.Heartbeat, ttl)
				t.Reset(every)
			}
		}
		// One beat at most: a NATS that refuses the key (permissions
		// from before standby reports, nats.go then logs the violation)
		// never answers, and must not hold up the takeover.
		bctx, cancel := context.WithTimeout(ctx, w.opts.Heartbeat)
		info := queue.HostInfo{Host: w.opts.Host, Instance: w.opts.Instance, Version: w.opts.Version, StartedAt: since, LastSeen: time.Now()}
		r, err := w.q.StandbyBeat(bctx, info)
		cancel()
		rep.info = info
		// A refused key is never unsure: the server that refuses it
		// (permissions from before standby reports) answers none, and
		// the report's removal then waits on nothing (acquireLease).
		rep.unsure = err != nil && rep.rev != 0
		if err == nil {
			rep.rev = r
		} else if ctx.Err() == nil {
			w.logger.Debug("standby report", "error", err)
		}
		select {
		case <-ctx.Done():
			return rep
		case <-t.C:
		}
	}
}

// standbyGone removes the standby report rep says this worker wrote last.
// When the last one written went unanswered, the server may hold it under
// a revision this worker never learned, and the removal conditioned on
// the last one heard is refused: the stopped standby stayed listed until
// the bucket's TTL (docs/decisions.md, hH24's TestStandbyIsReported). A
// worker may not read its host's report back (natsembed's
// WorkerPermissions), so it writes it once more, which tells it the
// revision, and removes that. A report another standby wrote since the
// last one heard is overwritten and removed with it: that standby is
// missing from the listing until its next beat, a heartbeat at most
// (docs/decisions.md, hE25).
func (w *Worker) standbyGone(ctx context.Context, rep standbyReport) error {
	err := w.q.StandbyGone(ctx, w.opts.Host, rep.rev)
	if err == nil || !rep.unsure {
		return err
	}
	rev, err := w.q.StandbyBeat(ctx, rep.info)
	if err != nil {
		return err
	}
	return w.q.StandbyGone(ctx, w.opts.Host, rev)
}
