package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// claimMarks is how far this host's orders were claimed (queue.ClaimMark):
// what NATS held at the tenure's start, raised by each claim here. Written
// back to NATS a heartbeat after a claim moved it, and when the tenure
// ends.
type claimMarks struct {
	mu      sync.Mutex
	mark    queue.ClaimMark // known: read from NATS, or claimed here
	written queue.ClaimMark // the last one NATS took from this process
	warned  bool            // the mark could not be read or written: said once
	// guard is what the host's info and orderly_worker_restore_guard say
	// of the check the mark allows (restoreGuard): "" before the first
	// read, "on" once NATS answered a read or a write, "off: <why>" once
	// it refused or did not answer one.
	guard string
	// first is set by a tenure's read of the mark, until its first claim
	// is written (writeFirstClaim).
	first bool
	// moved wakes keepClaimMark after a claim (one pending at most): an
	// idle worker has nothing to write and no timer to wake for.
	moved chan struct{}
}

// markWait bounds a read or a write of the claim mark: an authorization
// written for an older orderly leaves such a request unanswered, and the
// host must not wait on it longer.
const markWait = 2 * time.Second

// loadClaimMark reads the host's claim mark at the start of a tenure,
// before the consumer delivers anything, and keeps the higher of it and
// the one this process knows (its own claims, made before a nats-server
// restart lost the consumer and perhaps the write).
func (w *Worker) loadClaimMark(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, markWait)
	m, err := w.claimMarkOf(rctx)
	cancel()
	c := &w.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	c.first = err == nil
	if err != nil {
		w.markTrouble("read the host's claim mark", err)
		return
	}
	w.guardOn()
	if m.After(c.mark) {
		c.mark = m
	}
	if m.After(c.written) {
		c.written = m
	}
}

// claimMarkOf reads the host's claim mark. One this host's worker did not
// sign is no mark (queue.ErrUnauthenticatedClaimMark): trusted, a mark
// another host's worker forged far ahead would have every order
// PostgreSQL holds queued canceled as restored from a backup; ignored,
// the restore guard is lost until this tenure's first claim writes the
// host's own mark over it. Said at ERROR each time: nothing but another
// credential (a host's, or this one's before a rotation) or an older
// orderly writes such a mark.
func (w *Worker) claimMarkOf(ctx context.Context) (queue.ClaimMark, error) {
	m, err := w.q.ClaimMarkOf(ctx, w.opts.Host, w.opts.ClaimMarkKey)
	if errors.Is(err, queue.ErrUnauthenticatedClaimMark) {
		w.logger.Error("the host's claim mark in NATS was not written with this worker's own NATS credential: ignored, as no mark "+
			"(another host's worker can write it; docs/security.md, \"Known gaps of a stolen worker seed\")",
			"host", w.opts.Host, "bucket", queue.MarksBucket, "error", err)
		return queue.ClaimMark{}, nil
	}
	return m, err
}

// claimedAt raises the claim mark to the message at seq, stored at at,
// whose order this worker has just claimed in attempt.
func (w *Worker) claimedAt(seq uint64, at time.Time, attempt int) {
	c := &w.claims
	m := queue.ClaimMark{Seq: seq, Stored: at, Attempt: attempt}
	c.mu.Lock()
	moved := m.After(c.mark)
	if moved {
		c.mark = m
	}
	c.mu.Unlock()
	if moved {
		select {
		case c.moved <- struct{}{}:
		default:
		}
	}
}

// replayed reports whether the message at seq, stored at at, is at or
// below the claim mark: its order was delivered to this host's worker
// before, in stream order.
func (w *Worker) replayed(seq uint64, at time.Time) bool {
	c := &w.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mark.Covers(seq, at)
}

// writeFirstClaim writes the claim mark before the tenure's first claimed
// order runs; the claims after it are written a heartbeat later
// (keepClaimMark). A worker killed within a heartbeat of a claim leaves
// NATS a mark that does not name it, and a backup from before that claim,
// restored, has the order run again; for the first claim of a tenure (a
// worker started, or restarted after a crash, taking the host with orders
// waiting) that no longer holds. One write per tenure, before one order:
// nothing per order while orders flow. Skipped when the tenure could not
// read the mark: the write would wait markWait for nothing.
func (w *Worker) writeFirstClaim(ctx context.Context) {
	c := &w.claims
	c.mu.Lock()
	first := c.first
	c.first = false
	c.mu.Unlock()
	if first {
		w.writeClaimMark(ctx)
	}
}

// passed reports whether this host's worker claimed the order of the
// message at seq, stored at at, in an attempt past attempt, or an order
// after it (queue.ClaimMark.Passed).
func (w *Worker) passed(seq uint64, at time.Time, attempt int) bool {
	c := &w.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mark.Passed(seq, at, attempt)
}

// writeClaimMark writes the claim mark to NATS when it moved since the
// last write.
func (w *Worker) writeClaimMark(ctx context.Context) {
	c := &w.claims
	c.mu.Lock()
	m, written := c.mark, c.written
	c.mu.Unlock()
	if !m.After(written) {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, markWait)
	err := w.q.RaiseClaimMark(wctx, w.opts.Host, m, w.opts.ClaimMarkKey)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		w.markTrouble("write the host's claim mark", err)
		return
	}
	w.guardOn()
	if m.After(c.written) {
		c.written = m
	}
}

// keepClaimMark writes the claim mark a heartbeat after a claim moved it,
// until ctx ends; the tenure writes it once more when it ends. Under a
// steady flow of orders that is one write per heartbeat; idle, none.
// While the guard is off for want of a bucket, it looks for one each
// heartbeat (lookForBucket).
func (w *Worker) keepClaimMark(ctx context.Context) {
	t := time.NewTimer(w.opts.Heartbeat)
	t.Stop()
	look := time.NewTicker(w.opts.Heartbeat)
	defer look.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-look.C:
			w.lookForBucket(ctx)
			continue
		case <-w.claims.moved:
		}
		t.Reset(w.opts.Heartbeat)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		w.writeClaimMark(ctx)
	}
}

// lookForBucket reads the claim mark again while the guard is off for
// want of a bucket (an API older than the mark, or none started yet):
// an API of this version makes it at its start, and the guard is on from
// then, not from the host's next claim (an idle host's stayed off, and
// alerted, until an order came). One look at the bucket per heartbeat,
// only while it is missing.
func (w *Worker) lookForBucket(ctx context.Context) {
	c := &w.claims
	c.mu.Lock()
	missing := c.guard == guardNoBucket
	c.mu.Unlock()
	if !missing {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, markWait)
	m, err := w.claimMarkOf(rctx)
	cancel()
	if err != nil {
		return // still none, or not answered: the guard stays off
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w.guardOn()
	c.first = true // as a tenure's read: its next claim is written before it runs
	if m.After(c.mark) {
		c.mark = m
	}
	if m.After(c.written) {
		c.written = m
	}
}

// markTrouble says once per process that the claim mark could not be read
// or written, and shows the guard off until a read or a write succeeds
// (the host's info, orderly_worker_restore_guard); c.mu is held. Without
// it, a replayed order that a restored database holds queued is claimed
// as before.
func (w *Worker) markTrouble(what string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	c := &w.claims
	c.guard = guardOff(what, err)
	w.opts.Metrics.RestoreGuard(w.opts.Host, false)
	if c.warned {
		return
	}
	c.warned = true
	w.logger.Warn(what+"; a database restored from a backup may have this host run again an order it ran since (docs/deploy.md, \"Backup and restore\")",
		"error", err, "bucket", queue.MarksBucket)
}

// guardOn shows the guard on after NATS answered a read or a write of the
// claim mark; c.mu is held.
func (w *Worker) guardOn() {
	c := &w.claims
	if c.guard == guardIsOn {
		return
	}
	if c.guard != "" {
		w.logger.Info("the host's claim mark is read and written again: the restore guard is on", "bucket", queue.MarksBucket)
	}
	c.guard = guardIsOn
	w.opts.Metrics.RestoreGuard(w.opts.Host, true)
}

// guardIsOn is the host info's restore_guard while the claim mark works.
const guardIsOn = "on"

// guardNoBucket is the host info's restore_guard while there is no
// bucket for the claim mark.
const guardNoBucket = "off: kv bucket " + queue.MarksBucket + " does not exist yet: an orderly api of this version makes it at its start"

// guardOff is the host info's restore_guard after what failed with err.
// A request NATS does not answer within markWait is, in practice, one the
// worker's NATS user may not send (an account written for an orderly
// before the claim mark): the server refuses it to the connection, not to
// the request.
func guardOff(what string, err error) string {
	switch {
	case errors.Is(err, queue.ErrNoMarksBucket):
		return guardNoBucket
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "off: could not " + what + ": NATS did not answer within " + markWait.String() +
			" (a NATS user without the claim mark's subjects? docs/deploy.md, Upgrading)"
	}
	return "off: could not " + what + ": " + err.Error()
}

// restoreGuard is the guard's state for the host's info: "" until the
// first tenure read the mark.
func (w *Worker) restoreGuard() string {
	c := &w.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.guard
}

// settleReplayed handles a delivery at or below the claim mark before its
// claim: this host's worker was delivered the message before, in order,
// and claimed it or one after it. PostgreSQL holding its order queued at
// an attempt the host claimed past (never claimed, attempt 0; or handed
// back, and claimed again since: queue.ClaimMark.Passed) is then behind
// what the host did: restored from a backup taken before the claim, the
// message delivered again by a consumer created anew (a nats-server
// restart loses its state) while a limits stream still held it,
// acknowledged. The order may have run after the backup: it is ended as
// canceled, saying so, never claimed. handled is false when the order is
// not such a one (an order handed back and not claimed since keeps the
// attempt the mark names): the claim decides, as for any delivery.
func (w *Worker) settleReplayed(ctx context.Context, msg *delivery) (handled bool, err error) {
	id := msg.id
	seq, at := msg.stored()
	var o *order.Order
	err = w.retry(ctx, msg, "read a redelivered order", func(ctx context.Context) (err error) {
		o, err = w.store.GetOrder(ctx, id)
		return err
	})
	if errors.Is(err, order.ErrNotFound) {
		return false, nil // the claim drops it
	}
	if err != nil {
		return false, err
	}
	if o.Status != order.StatusQueued || o.Host != w.opts.Host || !w.passed(seq, at, o.Attempt) {
		return false, nil
	}
	var ok bool
	err = w.retry(ctx, msg, "cancel an order a restored database holds queued below the claim mark", func(ctx context.Context) (err error) {
		ok, err = w.store.Cancel(ctx, id, w.opts.Instance, replayedReason)
		return err
	})
	if err != nil {
		return false, err
	}
	if ok {
		w.logger.Error("order canceled: PostgreSQL holds it queued, yet this host's worker claimed it since or an order after it: restored from a backup",
			"order_id", id, "principal", o.Principal, "attempt", o.Attempt, "stream_seq", seq, "see", "docs/deploy.md, Backup and restore")
		w.opts.Metrics.Finished(o.Host, order.StatusCanceled, -1)
		w.event(o, "finished", order.StatusCanceled)
	}
	w.ack(msg, id)
	return true, nil
}

// replayedReason is the error of an order settleReplayed ends.
const replayedReason = "PostgreSQL was restored from a backup that held this order queued, but its host's worker had claimed it " +
	"(or an order after it) since: it may have run after the backup, so it is not run again (docs/deploy.md, \"Backup and restore\"): " +
	"check its host before resubmitting it"
