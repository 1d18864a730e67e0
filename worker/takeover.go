package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// takeover starts a tenure once the lease is held (docs/decisions.md, "The
// takeover protocol"):
//
//  1. fence: make this instance the host's owner in PostgreSQL. From the
//     commit on, a previous owner that was frozen or cut off can claim
//     nothing more, and cannot record a process for what it claimed
//     before (it then kills what it started);
//  2. settle every order a previous owner left running, oldest first: mark
//     it interrupted (or requeue it once when it is idempotent), then kill
//     and verify gone whatever its recorded processes left behind, and keep
//     the evidence; first, reap the attempts marked so and never reaped
//     (reapAbandoned); nothing runs before that is done;
//  3. rewind the host's consumer, so every unacknowledged message comes
//     back at once and in stream order. Taking the host from another
//     worker instance, recreate it, so that no pull request that instance
//     left pending survives to take one; taking it again from this
//     instance (after a gap, lost acks or a lapsed lease), reset it in
//     place, which a NATS cluster can do without its meta leader
//     (queue.RewindHostConsumer). Either way deliveries are numbered from
//     1 again, and the feeder refuses a tenure whose first delivery is
//     not numbered 1: a pull request that was not this tenure's took it.
func (w *Worker) takeover(ctx context.Context, lease *queue.Lease) (jetstream.Consumer, queue.Acked, error) {
	reads := w.readAhead(ctx)
	defer reads.Wait() // on every way out: the reads are this takeover's
	// On condition that the owner is still the one read before the
	// lease was taken: another worker's plain put may have landed over
	// this take, and the first of the two to commit here holds the host
	// (postgres.TakeHostFrom). Refused, this tenure ends before it
	// claims anything, and its release leaves the key to that owner.
	from := lease.TakenFrom()
	prev, epoch, err := w.store.TakeHostFrom(ctx, w.opts.Host, w.opts.Version, w.self, from.Instance, from.Epoch)
	if err != nil {
		return nil, queue.Acked{}, err
	}
	w.logger.Info("took the host over", "epoch", epoch, "previous_owner", prev.Instance)
	if prev != w.self {
		// Another owner's takeover came between: it reaped the recorded
		// processes of the attempts this worker marked, by their durable
		// mark, and reaping them again would replace its evidence with a
		// reap that found nothing.
		clear(w.unreaped)
	}
	if err := w.reapAbandoned(ctx); err != nil {
		return nil, queue.Acked{}, err
	}
	running, err := w.store.RunningOrders(ctx, w.opts.Host)
	if err != nil {
		return nil, queue.Acked{}, err
	}
	for _, o := range running {
		if o.Worker == w.opts.Instance && !w.started.Has(o.ID) {
			// Claimed by this instance in a commit whose answer was lost,
			// and never started: its redelivery runs it.
			continue
		}
		if _, _, err := w.abandon(ctx, o, fmt.Sprintf("the worker running it (%s) stopped before recording a result; taken over by %s", o.Worker, w.opts.Instance)); err != nil {
			return nil, queue.Acked{}, err
		}
	}
	// The claim mark is loaded (readAhead) before the consumer delivers
	// anything.
	look := reads.look()
	acked, fromFirst := w.acked.next()
	var cons jetstream.Consumer
	switch {
	case fromFirst:
		// The last consumer made past the orders acked delivered
		// another first (errNotPast).
		cons, err = w.q.HostConsumerFromFirst(ctx, w.opts.Host)
	case look.Lost():
		if prev != w.self || acked.Seq == 0 {
			// A process that did not own the host last, or that has
			// no record of the acks (kept in memory: it started since,
			// or none was confirmed since its last rewind): where
			// PostgreSQL says the host's orders were claimed.
			acked = w.lastClaimed(ctx)
		}
		var made bool
		if cons, made, err = w.q.HostConsumerPast(ctx, w.opts.Host, acked); made {
			return cons, acked, err
		}
	case prev == w.self: // this very process owned the host last
		cons, err = w.q.RewindHostConsumer(ctx, w.opts.Host)
	default:
		cons, err = w.q.RenewHostConsumerLooked(ctx, w.opts.Host, look)
	}
	if err == nil {
		w.acked.reset()
	}
	return cons, queue.Acked{}, err
}

// takeoverReads are the takeover's reads of NATS, made beside its
// statements in PostgreSQL (readAhead).
type takeoverReads struct {
	sync.WaitGroup
	consumer queue.HostConsumerLook
}

// look waits for the reads and returns what the look-up of the host's
// consumer found.
func (r *takeoverReads) look() queue.HostConsumerLook {
	r.Wait()
	return r.consumer
}

// readAhead starts the takeover's reads of NATS, the host's claim mark
// (replay.go: how far its orders were claimed, loaded before the
// consumer delivers anything) and a look-up of its consumer, each in a
// goroutine of its own, beside the fence and the settling of what the
// previous owner left, which are PostgreSQL's alone: nothing of those
// reads them or changes what they read. One after another they were
// four round trips in a row, and the look-up was asked twice, each up to
// a second when a whole fleet's workers took their hosts at once
// (TestFaultsFleet's every worker SIGKILLed, docs/decisions.md, hE29).
func (w *Worker) readAhead(ctx context.Context) *takeoverReads {
	r := &takeoverReads{}
	r.Add(2)
	go func() {
		defer r.Done()
		w.loadClaimMark(ctx)
	}()
	go func() {
		defer r.Done()
		r.consumer = w.q.LookUpHostConsumer(ctx, w.opts.Host)
	}()
	return r
}

// lastClaimed is the message of the host's order that PostgreSQL records
// as claimed last, for a consumer the server lost to be made again past
// it (queue.HostConsumerPast), zero when there is none or PostgreSQL does
// not say: then at the first message stored, as before. A worker process
// restarted together with a single nats-server had its consumer made at
// the first message, and every finished order the stream still held was
// delivered again, read and acked before the first new one
// (docs/decisions.md, hE25). PostgreSQL is the worker's own history; the
// sequence there is one the worker claimed a delivery at, and the first
// delivery must carry that order's id.
func (w *Worker) lastClaimed(ctx context.Context) queue.Acked {
	seq, id, err := w.store.LastClaimed(ctx, w.opts.Host)
	if err != nil {
		w.logger.Warn("read the host's order claimed last; its consumer starts at the first message stored", "error", err)
		return queue.Acked{}
	}
	return queue.Acked{Seq: seq, ID: id}
}

// leftRunning settles the orders of the host that PostgreSQL holds as
// running while this worker, between orders, runs none: a database
// restored from a backup taken while they ran (their results and their
// messages' acks came after it), under a worker that owned the host then
// and still does. The takeover only looks when a tenure starts, so they
// stayed running for as long as the worker did. Nothing of this host can
// be running elsewhere (the fence), so they are settled as the takeover
// settles them. It runs in the consume loop, never while an order is
// claimed or running here.
func (w *Worker) leftRunning(ctx context.Context) error {
	if err := w.reapAbandoned(ctx); err != nil {
		return err
	}
	running, err := w.store.RunningOrders(ctx, w.opts.Host)
	if err != nil {
		return err
	}
	for _, o := range running {
		if o.Worker == w.opts.Instance && !w.started.Has(o.ID) {
			continue // as in takeover: its redelivery runs it
		}
		if _, _, err := w.abandon(ctx, o, fmt.Sprintf("found running while its host's worker (%s) ran nothing: the result is not in the database (restored from a backup taken while it ran?)", w.opts.Instance)); err != nil {
			return err
		}
	}
	return nil
}

// partialOutputCap bounds the partial output kept of an interrupted order
// that set no output cap of its own.
const partialOutputCap = 10 << 20

// abandon settles an order whose attempt was started by a worker that is
// gone: interrupted (its outcome is unknown and it never runs again), or,
// when it is idempotent, this was its first attempt and nobody asked to
// cancel it, queued again to run once more in its place. Only after the status has left "running" — when
// no process can be recorded for that attempt any more — are its processes
// reaped, so none can start unseen afterwards. An interrupted order's
// mark carries the output its worker streamed (mark), so the order never
// reads ended without it. It reports whether it marked the attempt
// (mark: not when another settled it meanwhile), and whether the order
// was requeued.
//
// Once marked, the attempt is no longer running, so no later look for
// running orders finds it: a failure between the mark and the reap (a
// mark whose answer was lost, the record not read) left a dead worker's
// leftovers running next to the host's next orders. Until it is reaped
// the attempt stays in w.unreaped, and the next call for it (settle's
// retry, or reapAbandoned at the next takeover or sweep) goes on from
// where the failed one stopped.
func (w *Worker) abandon(ctx context.Context, o *order.Order, reason string) (marked, requeued bool, err error) {
	marked, requeue, err := w.mark(ctx, o, reason)
	if err != nil || !marked {
		return false, false, err
	}
	return true, requeue, w.reapMarked(ctx, o, requeue, true)
}

// reapMarked reaps the processes of o's attempt, which its mark ended
// (requeued or interrupted), keeps the evidence, and, when announce is
// set (the mark was this call's), says how the order ended: its line, its
// count and its finished event.
func (w *Worker) reapMarked(ctx context.Context, o *order.Order, requeue, announce bool) error {
	proc, err := w.store.ProcessOf(ctx, o.ID, o.Attempt)
	if err != nil {
		return err
	}
	ev := postgres.Evidence{Reap: w.reap(ctx, o.ID, proc)}
	if _, failed := ev.Reap["reap_error"]; !failed && o.Kind == order.KindScript {
		w.removeRunDirs(o.ID, ev.Reap)
	}
	if !requeue && !(announce && w.unreaped[o.ID].output) {
		// The mark did not store the output: its read of the live
		// stream failed, or the mark is not this call's (an admin's
		// forget, a worker of an earlier version, or one whose answer
		// was lost before a takeover came between). The evidence
		// stores it, unless the order holds some already
		// (postgres.RecordEvidence): an order answered with its output
		// is never answered with another.
		ev.Output = w.partialOutput(ctx, o)
	}
	if err := w.store.RecordEvidence(ctx, o.ID, o.Attempt, w.opts.Instance, ev); err != nil {
		w.logger.Warn("record evidence of an interrupted order", "order_id", o.ID, "error", err)
	}
	delete(w.unreaped, o.ID)
	attrs := []any{"order_id", o.ID, "principal", o.Principal, "attempt", o.Attempt, "previous_worker", o.Worker}
	for k, v := range ev.Reap {
		attrs = append(attrs, k, v)
	}
	switch {
	case !announce:
		w.logger.Warn("reaped an attempt marked ended but never reaped", attrs...)
	case requeue:
		w.logger.Warn("order requeued after its worker stopped (idempotent)", attrs...)
	default:
		w.logger.Warn("order interrupted", attrs...)
		w.opts.Metrics.Finished(o.Host, order.StatusInterrupted, -1)
		w.event(o, "finished", order.StatusInterrupted)
	}
	return nil
}

// partialOutput reads back from the live stream the output o's lost
// attempt published, for its interrupted order to keep; nil when o
// captures no output or the stream could not be read (logged).
//
// A requeued order runs again under its id, its chunks from offset 0
// again, after the lost attempt's, which stay in the live stream: a
// worker may not purge it (it takes no rollups: queue.LiveStream's
// config). A second loss reads back only the newest run's
// (queue.PartialOutput); a follower that comes later reads the lost
// attempt's chunks, then the next run's started event and its chunks
// from offset 0, as a follower there throughout did (the Go client's
// OnRunAgain, docs/client.md).
func (w *Worker) partialOutput(ctx context.Context, o *order.Order) *postgres.PartialOutput {
	if !o.CaptureStdout && !o.CaptureStderr {
		return nil
	}
	limit := o.MaxOutput
	if limit <= 0 {
		// The live stream holds at most the worker's output cap per
		// order; this only bounds memory.
		limit = partialOutputCap
	}
	p, err := w.q.PartialOutput(ctx, o.Host, o.ID, limit, o.Attempt)
	if err != nil {
		w.logger.Warn("read partial output of an interrupted order", "order_id", o.ID, "error", err)
		return nil
	}
	return &postgres.PartialOutput{Stdout: p.Stdout, Stderr: p.Stderr,
		StdoutTruncated: p.StdoutTruncated, StderrTruncated: p.StderrTruncated}
}

// abandoned is an attempt abandon was called for, and why; output is
// whether its mark stored the attempt's output.
type abandoned struct {
	o      *order.Order
	reason string
	output bool
}

// reapAbandoned finishes the calls of abandon that a failure ended (see
// abandon), then reaps the attempts PostgreSQL holds as marked and not
// reaped (UnreapedAttempts): the mark of a worker that died or froze
// before its reap, or of an admin who abandoned the host's orders while
// the machine lived on. Both before the host runs anything else.
func (w *Worker) reapAbandoned(ctx context.Context) error {
	for _, a := range w.unreaped {
		if _, _, err := w.abandon(ctx, a.o, a.reason); err != nil {
			return err
		}
	}
	left, err := w.store.UnreapedAttempts(ctx, w.opts.Host)
	if err != nil {
		return err
	}
	for _, u := range left {
		o, err := w.store.GetOrder(ctx, u.ID)
		if errors.Is(err, order.ErrNotFound) {
			continue // deleted since, with its record
		}
		if err != nil {
			return err
		}
		o.Attempt, o.Worker = u.Attempt, u.Worker
		if err := w.reapMarked(ctx, o, u.Requeued, false); err != nil {
			return err
		}
	}
	return w.sweepCgroups(ctx)
}

// mark marks an abandoned attempt requeued or interrupted (see abandon)
// and keeps it in w.unreaped for abandon to reap. marked is false when
// the attempt was settled otherwise meanwhile: nothing to do. For an
// attempt already in w.unreaped, which an earlier call may have marked,
// it reads back whether it did: the host's orders are settled by its
// owner only (the writes are fenced), so an attempt that left "running"
// for interrupted was marked by this worker. One that left it for
// queued may also have been handed back by its previous worker, whose
// Unclaim is not fenced (hA28): taken as requeued here, which has the
// caller judge its message again (settle's begin), as a hand-back
// wants; only the requeue's log line is then wrong.
func (w *Worker) mark(ctx context.Context, o *order.Order, reason string) (marked, requeued bool, err error) {
	if a, ok := w.unreaped[o.ID]; ok && a.o.Attempt == o.Attempt {
		cur, err := w.store.GetOrder(ctx, o.ID)
		if errors.Is(err, order.ErrNotFound) {
			delete(w.unreaped, o.ID) // deleted since: nothing left to settle
			return false, false, nil
		}
		if err != nil {
			return false, false, err
		}
		switch {
		case cur.Attempt == o.Attempt && cur.Status == order.StatusInterrupted:
			// Marked, but whether with the output this worker read
			// is not known: its answer was lost, and an admin's
			// forget marks with none. The evidence reads it again,
			// stored where the order holds none (RecordEvidence).
			w.unreaped[o.ID] = abandoned{o: a.o, reason: a.reason}
			return true, false, nil
		case cur.Attempt > o.Attempt || cur.Status == order.StatusQueued:
			return true, true, nil
		case cur.Status != order.StatusRunning:
			delete(w.unreaped, o.ID)
			return false, false, nil // its worker's result came first
		}
		// Still running under that attempt: not marked yet.
	}
	if w.unreaped == nil {
		w.unreaped = make(map[uuid.UUID]abandoned)
	}
	w.unreaped[o.ID] = abandoned{o: o, reason: reason}
	var ok bool
	// Once per order, not at attempt 1 only: a hand-back (a stop, a
	// lost lease, a renewal late at the start) raises the next claim's
	// attempt though nothing ran, and an idempotent order handed back
	// first was interrupted at its first loss (Requeue refuses a second
	// requeue by its event).
	requeued = o.Idempotent
	if requeued {
		ok, err = w.store.Requeue(ctx, o.ID, o.Attempt, w.opts.Instance, reason)
		// Not requeued: settled meanwhile, or its cancel was requested
		// (Requeue), which interrupting it below tells apart.
		requeued = err == nil && ok
	}
	if !requeued && err == nil {
		// The output the dead worker streamed goes with the mark, read
		// before it: the order reads interrupted with its output or not
		// at all (postgres.InterruptAttempt). A dead worker publishes
		// nothing more; a frozen one that thaws before the reap below
		// kills its command may still flush a chunk, followers then
		// write it live and the stored output lacks it, as when the
		// read came after the reap (the worker's pipe still held some)
		// (docs/decisions.md, "(hB29)").
		out := w.partialOutput(ctx, o)
		w.unreaped[o.ID] = abandoned{o: o, reason: reason, output: out != nil}
		ok, err = w.store.InterruptAttempt(ctx, o.ID, o.Attempt, w.opts.Instance, "interrupted: "+reason, out)
	}
	if err != nil && !permanent(err) {
		return false, false, err // perhaps marked, the answer lost: it stays in w.unreaped
	}
	if err != nil || !ok {
		delete(w.unreaped, o.ID)
		return false, false, err // refused, or settled meanwhile by someone else
	}
	return true, requeued, nil
}
