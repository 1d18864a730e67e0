package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/systemd"
)

// handle runs the delivery protocol (DESIGN §2.2) starting with msg:
// claim, or settle a delivery of an order that is not queued; execute;
// write the result guarded by the attempt; ack only after the commit. When
// the next message is already waiting once an order has run, its claim is
// written in the same transaction as the result (pipelining keeps the
// order: one order at a time, in stream order), so handle may run several
// orders. An error means a message could not be settled: the caller must
// stop consuming, so that nothing overtakes it.
func (w *Worker) handle(ctx context.Context, msg *delivery, msgs <-chan *delivery) error {
	for msg != nil {
		o, claimed, err := w.begin(ctx, msg)
		if err != nil || o == nil || !claimed {
			return err
		}
		if msg, err = w.execute(ctx, msg, o, msgs); err != nil {
			return err
		}
	}
	return nil
}

// begin claims the message's order, or settles a delivery of an order that
// is not queued. claimed reports whether the caller must execute o.
func (w *Worker) begin(ctx context.Context, msg *delivery) (o *order.Order, claimed bool, err error) {
	if msg.idErr != nil {
		// Not an order id: nothing we could ever run. Drop it for good.
		w.logger.Error("dropped a message that is not an order", "error", msg.idErr)
		_ = msg.Term()
		return nil, false, nil
	}
	id := msg.id
	seq, at := msg.stored()
	if w.replayed(seq, at) {
		handled, err := w.settleReplayed(ctx, msg)
		if err != nil || handled {
			return nil, false, err
		}
	}
	// A stop request leaves the claim the result write's grace
	// (writeContext): cut short, its commit could land unheard. A claim
	// whose answer was lost is read back by the retry, and settle adopts
	// it; execute then hands it back if the worker is stopping.
	wctx, cancel := w.writeContext(ctx)
	err = w.retry(wctx, msg, "claim order", func(ctx context.Context) error {
		// At each try: a lapse found while the last one was out stops
		// the next (hold.go).
		if err := w.hold.wait(ctx, "claim", id); err != nil {
			return err
		}
		return w.watchWait(ctx, "claim order", id, uuid.Nil, func(ctx context.Context) (err error) {
			o, claimed, err = w.store.Claim(ctx, id, w.opts.Instance, seq)
			return err
		})
	})
	cancel()
	switch {
	case errors.Is(err, order.ErrNotFound):
		w.logger.Error("dropped a message whose order is not in the database", "order_id", id)
		_ = msg.Term()
		return nil, false, nil
	case errors.Is(err, postgres.ErrNotOwner) && o != nil && o.Host != w.opts.Host:
		return nil, false, w.misrouted(msg, o)
	case errors.Is(err, postgres.ErrWaiterGone) && o != nil && o.Host == w.opts.Host:
		return w.waiterGone(ctx, msg, o)
	case err != nil:
		return nil, false, err
	case claimed:
		w.claimedAt(seq, at, o.Attempt)
		w.writeFirstClaim(ctx)
		return o, true, nil
	}
	o, claimed, err = w.settle(ctx, msg, o)
	if claimed {
		w.claimedAt(seq, at, o.Attempt)
		w.writeFirstClaim(ctx)
	}
	return o, claimed, err
}

// waiterGone settles the delivery of o, an order a compat surface's
// client waited for through an API process that is gone: nobody would
// read its result, and its client (which never learned its id) may send
// the request again, so it is canceled, never run, as the original tools
// never ran a request's command after they died. So is a sub-runbook run
// whose parent run, which waited for it, has ended: the step that waited
// failed with it. A forged presence can
// only make the worker cancel an order so, never run one: the claim
// still requires it queued, owned and bound to a live process. When the
// cancel finds the order changed meanwhile, the claim is tried again.
func (w *Worker) waiterGone(ctx context.Context, msg *delivery, o *order.Order) (*order.Order, bool, error) {
	var (
		canceled bool
		reason   string
	)
	err := w.retry(ctx, msg, "cancel an order whose waiter is gone", func(ctx context.Context) (err error) {
		canceled, reason, err = w.store.CancelWaiterGone(ctx, o.ID, w.opts.Instance)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if !canceled {
		return w.begin(ctx, msg) // claimed or ended meanwhile, or the host lost
	}
	w.logger.Info("order canceled", "order_id", o.ID, "principal", o.Principal, "source", o.Source,
		"reason", reason)
	w.opts.Metrics.Finished(o.Host, order.StatusCanceled, -1)
	w.event(o, "finished", order.StatusCanceled)
	w.ack(msg, o.ID)
	return nil, false, nil
}

// misrouted drops a message on this host's subject that names an order of
// another host: only a forged or corrupted publish can do that, and the
// worker runs nothing it did not check.
func (w *Worker) misrouted(msg jetstream.Msg, o *order.Order) error {
	w.logger.Error("dropped a message naming an order of another host", "order_id", o.ID, "order_host", o.Host,
		"subject", msg.Subject())
	_ = msg.Term()
	return nil
}

// execute runs a claimed order and records its result. It returns a
// message still to begin, when the pipelined claim of the next one could
// not be made.
func (w *Worker) execute(ctx context.Context, msg *delivery, o *order.Order, msgs <-chan *delivery) (*delivery, error) {
	// written is the result last run: the files its spilled outputs are
	// in are closed (freed) once it is written, when the next order
	// starts or execute returns, whatever the way.
	var written postgres.Finish
	defer func() { closeSpilled(written) }()
	// An order left unsettled for the next one's start is settled on
	// every way out, whatever stopped the next one.
	defer w.settleUnsettled()
	for {
		closeSpilled(written)
		written = postgres.Finish{}
		if ctx.Err() != nil {
			w.settleUnsettled()
			// Claimed (pipelined, or just before the stop request) but
			// not started, and the worker is stopping: hand it back to
			// the queue rather than leave it running for a successor to
			// find and interrupt. Its message stays unacked.
			_, err := w.unclaim(ctx, msg, o, "the worker is stopping")
			return nil, err
		}
		if !w.hold.fresh() {
			// The start waits for the lease: the order before it is
			// settled now, not after the wait.
			w.settleUnsettled()
			if w.hold.stale() {
				// Claimed while the lease was fresh, and its renewal is
				// late now (or in doubt): handed back at once, and
				// claimed again once a renewal lands (begin waits for
				// it). Waiting here instead left it claimed for as long
				// as the renewal went unanswered, and the successor a
				// lapse lets in, fencing before the verdict came,
				// interrupted it, never started: lost. A hand-back needs
				// only PostgreSQL, which has just answered the claim:
				// begun under half a lease after the last renewal sent,
				// it lands before any successor can take the key (a
				// lease after that renewal) unless the claim and it took
				// half a lease between them. A lost lease waits below,
				// which answers at once.
				if _, err := w.unclaim(ctx, msg, o, "the host lease's last renewal is late; claimed again after the next one"); err != nil {
					return nil, err
				}
				return msg, nil
			}
		}
		if err := w.hold.wait(ctx, "start", o.ID); err != nil {
			// Claimed while the lease was held, lost before the start:
			// back to the queue for the host's next owner, unstarted.
			why := "the host lease is not held"
			if !errors.Is(err, errNotHeld) {
				why = "the worker is stopping"
			}
			if _, uerr := w.unclaim(ctx, msg, o, why); uerr != nil {
				return nil, uerr
			}
			return nil, err
		}
		w.started.Add(o.ID)
		if err := w.failPoint("after_claim", o); err != nil {
			return nil, err
		}
		w.logStarted(o)
		// Its started event goes with the settling of the order before
		// it, once its leader started (settle.go).
		w.unsettled.start = o

		finish, ran, unstarted := w.run(ctx, msg, o)
		w.settleUnsettled() // when nothing started: a refusal, a dry run, an action
		written = finish
		if unstarted {
			// The worker's stop ended it before any process of it
			// started (it waited for a file descriptor past the
			// shutdown grace): nothing ran, so it goes back to the
			// queue for the host's next tenure, in its place, as a
			// claimed order not yet started does. Unclaim refuses an
			// attempt with a recorded process.
			handed, err := w.unclaim(ctx, msg, o, "the worker stopped before it could start")
			if handed {
				// Its started event is out: a follower (SSE, the run
				// page, the CLI) held the order running, and one that
				// came later read it so from the live stream, until
				// the host's next tenure ran it. This takes it back
				// where they read it; kept as long as the started
				// event it follows.
				w.publishEvent(queue.Event{OrderID: o.ID, Type: "unclaimed", Status: string(order.StatusQueued), Host: o.Host,
					TTL: startedTTL(o)})
			}
			return nil, err
		}
		if err := w.failPoint("after_exec", o); err != nil {
			return nil, err
		}
		finish.Actor = w.opts.Instance
		if w.q.AwaitsOwnEnd(o.Host, o.ID) {
			// A request of this process (serve's API) waits for it:
			// the result's statement reads back the order it writes,
			// for the waiter to answer from (finishedAs).
			finish.ReadBack = &postgres.ReadBack{}
		}

		next := w.nextDelivery(ctx, msg, msgs)
		if next != nil && next.idErr != nil {
			w.logger.Error("dropped a message that is not an order", "error", next.idErr)
			_ = next.Term()
			next = nil
		}
		var (
			nextID  uuid.UUID
			nextSeq uint64
			nextAt  time.Time
		)
		if next != nil {
			nextID = next.id
			nextSeq, nextAt = next.stored()
		}
		if next == nil || !w.hold.fresh() || w.replayed(nextSeq, nextAt) {
			// Without the result committed we must not ack: the order
			// would look finished to JetStream and unknown to PostgreSQL.
			// A next message delivered before (replayed) is not claimed
			// with it: begin looks at its order first; nor is one taken
			// while the lease is not held: begin waits for the verdict.
			if err := w.completeAlone(ctx, msg, o, finish, ran); err != nil {
				return nil, err
			}
			return next, nil
		}
		// A stop request must not cut the commit short: its answer would
		// be lost with the claim of the next order possibly made.
		wctx, cancel := w.writeContext(ctx)
		var step postgres.Step
		err := w.watchWait(wctx, "write result and claim the next order", o.ID, nextID, func(ctx context.Context) (err error) {
			step, err = w.store.CompleteAndClaim(ctx, o.ID, o.Attempt, finish, nextID, w.opts.Instance, nextSeq)
			return err
		})
		cancel()
		if err != nil {
			// The transaction failed, or committed with its answer lost.
			// Write the result alone: its guard makes a repeat harmless,
			// and a conflict here means the lost commit wrote it. The next
			// order is claimed afresh; if the lost commit claimed it, the
			// claim reads it back as ours and never started, and runs it
			// (execute hands it back instead if the worker is stopping).
			w.logger.Warn("pipelined result and claim failed; writing the result alone", "order_id", o.ID, "error", err)
			if err := w.completeAlone(ctx, msg, o, finish, ran); err != nil {
				return nil, err
			}
			return next, nil
		}
		if step.Done != nil {
			// Refused: complete reads back why, as for a result written
			// alone (PostgreSQL may have lost the claim, not given the
			// order to anyone), and says so.
			if err := w.completeAlone(ctx, msg, o, finish, ran); err != nil {
				return nil, err
			}
		} else if step.Claimed {
			w.settleAfterStart(msg, o, finish, ran)
		} else {
			w.finished(msg, o, finish, ran)
		}
		switch {
		case step.Claimed:
			w.claimedAt(nextSeq, nextAt, step.Next.Attempt)
			msg, o = next, step.Next
			continue
		case errors.Is(step.NextErr, postgres.ErrNotOwner) && step.Next != nil && step.Next.Host != w.opts.Host:
			return nil, w.misrouted(next, step.Next)
		case step.NextErr != nil || step.Next == nil:
			return next, nil // claim it afresh (or stop there when we lost the host)
		}
		adopted, _, err := w.settle(ctx, next, step.Next)
		if err != nil || adopted == nil {
			return nil, err
		}
		w.claimedAt(nextSeq, nextAt, adopted.Attempt)
		msg, o = next, adopted
	}
}

// completeAlone writes o's result finish by itself (complete), not with
// the next order's claim, and settles its message.
func (w *Worker) completeAlone(ctx context.Context, msg *delivery, o *order.Order, finish postgres.Finish, ran time.Duration) error {
	stored, err := w.complete(ctx, msg, o, finish)
	if errors.Is(err, errLeftToNextAttempt) {
		return nil
	}
	if err != nil {
		return err
	}
	w.settled(msg, o, finish, ran, stored)
	return nil
}

// unclaim puts an order this worker claimed and never started back in the
// queue, guarded by the attempt; on failure the successor interrupts it.
// why says what stopped it. handed reports that the order is queued
// again by this call.
func (w *Worker) unclaim(ctx context.Context, msg jetstream.Msg, o *order.Order, why string) (handed bool, err error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = w.retry(wctx, msg, "hand a claimed order back", func(ctx context.Context) error {
		var err error
		handed, err = w.store.Unclaim(ctx, o.ID, o.Attempt, w.opts.Instance, why)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("hand order %s back: %w", o.ID, err)
	}
	if !handed {
		// Not this worker's claimed attempt any more: a successor that
		// took the host meanwhile settled it (interrupted), or a cancel
		// ended it. The row says what became of it; saying "handed
		// back" named an order that was not.
		w.logger.Info("order not handed back: "+why+"; its attempt was settled by another", "order_id", o.ID,
			"principal", o.Principal, "attempt", o.Attempt)
		return false, nil
	}
	w.logger.Info("order handed back unstarted: "+why, "order_id", o.ID, "principal", o.Principal)
	return true, nil
}

// ready returns the next message if one is already waiting, without
// blocking; none while the worker is stopping.
func ready(ctx context.Context, msgs <-chan *delivery) *delivery {
	if ctx.Err() != nil {
		return nil
	}
	select {
	case m, ok := <-msgs:
		if ok {
			return m
		}
	default:
	}
	return nil
}

// settled acks an order whose result complete has written or refused,
// and reports it as finished only when its result is the one recorded:
// one refused was settled by whoever changed the order (a successor
// that interrupted it counted it, logged it and told its clients), and
// a second "order finished" with this worker's status would contradict
// the row, count the order twice and tell its followers a status it
// does not have.
func (w *Worker) settled(msg *delivery, o *order.Order, f postgres.Finish, ran time.Duration, stored bool) {
	if !stored {
		w.ack(msg, o.ID)
		return
	}
	w.finished(msg, o, f, ran)
}

// finished reports an order whose result is committed, and acks it.
//
// The finished event goes first: it is what a waiting request answers
// on, and published after the ack it waited behind the ack's send (its
// confirmation's timer and subject, the metric, the log line) and, on
// the bus, behind the server's handling of the ack read before it:
// 27 – 94 µs of the 127 – 236 from the result's commit to the API's
// hub (docs/benchmarks.md, "One sync order's wall-clock timeline"). The
// order does not matter to anything else: both follow the commit, and
// a worker that dies between them leaves a redelivery that finds the
// order finished and only acks it, as one that died after the ack left
// a lost event that the waiter's poll of PostgreSQL makes up for.
func (w *Worker) finished(msg *delivery, o *order.Order, f postgres.Finish, ran time.Duration) {
	alone := w.alone == o.ID
	w.alone = uuid.Nil
	w.finishedAs(msg, o, f, ran, alone)
}

// finishedAs is finished with the order's Event.Alone said by the
// caller (settleAfterStart reads it before the next order's run sets it).
//
// The order its commit wrote, when read back (postgres.Finish.ReadBack),
// goes with the event to this process's own hearers only (serve's API:
// queue.HearOwnEnds); read back only by a statement that committed this
// result, it is nil when the result was found written by a try whose
// answer was lost.
func (w *Worker) finishedAs(msg *delivery, o *order.Order, f postgres.Finish, ran time.Duration, alone bool) {
	ev := queue.Event{OrderID: o.ID, Type: "finished", Status: string(f.Status), Host: o.Host, Alone: alone}
	if f.ReadBack != nil {
		ev.Committed = f.ReadBack.Order
	}
	w.publishEvent(ev)
	w.ack(msg, o.ID)
	w.opts.Metrics.Finished(o.Host, f.Status, ran)
	w.logFinished(o, f)
}

// logStarted writes an order's "order started" line. Its arguments are
// built only when the line is written: for a logger above info (the
// bench's serve logs at warn) the list and its boxed values were made for
// every order and dropped (docs/benchmarks.md, "Serve's sync order,
// message by message"; TestStateLinesBelowTheirLevelAllocateNothing).
func (w *Worker) logStarted(o *order.Order) {
	if !w.logger.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	started := []any{"order_id", o.ID, "principal", o.Principal, "attempt", o.Attempt,
		"stream_seq", o.StreamSeq, "command", o.Command}
	if o.DryRun {
		started = append(started, "dry_run", true) // checked, never executed
	}
	w.logger.Info("order started", started...)
}

// logFinished writes an order's "order finished" line, built only when
// it is written (logStarted).
func (w *Worker) logFinished(o *order.Order, f postgres.Finish) {
	if !w.logger.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	// An exit code, or the signal that ended the process, or neither
	// (nothing ran): never a nil that text logs print as <nil>.
	how := []any{"order_id", o.ID, "principal", o.Principal, "status", f.Status}
	switch r := f.Result; {
	case r.ExitCode != nil:
		how = append(how, "exit_code", *r.ExitCode)
	case r.Signal != "":
		how = append(how, "signal", r.Signal)
	}
	// A dry run "succeeds" without running anything, and a refusal, a
	// timeout or a failed start says why only here: the line must not
	// read as a command that ran.
	if o.DryRun {
		how = append(how, "dry_run", true)
	}
	if f.Result.Error != "" {
		how = append(how, "error", f.Result.Error)
	}
	w.logger.Info("order finished", append(how, "duration_ms", f.Result.DurationMS)...)
}

// settle handles a delivery of an order this worker could not claim. It
// returns the order when it must be executed after all: one this instance
// claimed in a commit whose answer was lost and never started, or an
// idempotent one requeued after its worker vanished (claimed again here).
//   - queued: its deadline passed; it becomes expired, never started;
//   - running, claimed by this instance and never started: run it;
//   - running otherwise: an attempt started by a worker that is gone, so
//     its outcome is unknown: interrupted (never executed twice), after
//     its leftover processes are killed;
//   - terminal: a duplicate delivery; ack only.
func (w *Worker) settle(ctx context.Context, msg *delivery, o *order.Order) (*order.Order, bool, error) {
	if o.Host != w.opts.Host {
		return nil, false, w.misrouted(msg, o)
	}
	switch {
	case o.Status == order.StatusQueued:
		var expired bool
		err := w.retry(ctx, msg, "expire order", func(ctx context.Context) (err error) {
			expired, err = w.store.Expire(ctx, o.ID, w.opts.Instance)
			return err
		})
		if err != nil {
			return nil, false, err
		}
		if expired {
			w.logger.Info("order expired", "order_id", o.ID, "principal", o.Principal)
			w.opts.Metrics.Finished(o.Host, order.StatusExpired, -1)
			w.event(o, "finished", order.StatusExpired)
		}
	case o.Status == order.StatusRunning && o.Worker == w.opts.Instance && !w.started.Has(o.ID):
		w.logger.Info("running an order whose claim commit was in doubt", "order_id", o.ID, "attempt", o.Attempt)
		return o, true, nil
	case o.Status == order.StatusRunning:
		var marked, requeued bool
		err := w.retry(ctx, msg, "settle interrupted order", func(ctx context.Context) (err error) {
			marked, requeued, err = w.abandon(ctx, o, fmt.Sprintf("redelivered while running (attempt %d); the worker running it (%s) stopped before recording a result", o.Attempt, o.Worker))
			return err
		})
		if err != nil {
			return nil, false, err
		}
		if requeued || !marked {
			// Not marked: settled by another since the claim read it
			// running, and perhaps queued again: its previous worker,
			// whose claim committed after the takeover's look for
			// running orders, handed it back unstarted (Unclaim is not
			// fenced). Acknowledged then, its message left the work
			// queue and the order stayed queued, never run, while the
			// orders after it ran. begin judges it as it is now.
			if !marked {
				w.logger.Info("order settled by another since its claim read it running; judged again", "order_id", o.ID,
					"attempt", o.Attempt, "previous_worker", o.Worker)
			}
			return w.begin(ctx, msg)
		}
	}
	w.ack(msg, o.ID)
	return nil, false, nil
}

// run checks the host policy and executes the order, keeping the message
// alive with InProgress while the process runs. ran is how long the process
// ran, or -1 when nothing was executed. unstarted reports that the
// worker's stop ended the order before any process of it started (while
// it waited for a file descriptor): f is then not to be recorded.
func (w *Worker) run(ctx context.Context, msg jetstream.Msg, o *order.Order) (f postgres.Finish, ran time.Duration, unstarted bool) {
	if len(o.Policy.Unknown) > 0 {
		// An API newer than this worker allowed it, possibly counting on
		// a check only a newer worker makes: never run it without.
		w.logger.Error("refused an order accepted by a newer API: upgrade this worker", "order_id", o.ID,
			"unknown_policy_keys", o.Policy.Unknown, "version", w.opts.Version)
		// An *order.Error's text, so that its code is known again
		// (order.CodeOfText); workers before it wrote the message alone,
		// which CodeOfText knows too.
		why := order.Errorf(order.CodeUnprocessable, "%s%s, unknown to this worker (version %s): an API newer than the worker accepted it; upgrade the worker",
			order.NewerAPIRefusal, quoteKeys(o.Policy.Unknown), w.opts.Version).Error()
		return postgres.Finish{Status: order.StatusRejected, Result: order.Result{Error: why},
			Detail: map[string]any{"reason": why, "unknown_policy_keys": o.Policy.Unknown}}, -1, false
	}
	prep, err := w.policy.Prepare(o)
	if err != nil {
		status := order.StatusRejected
		if order.ErrorCode(err) == order.CodeUnavailable {
			// The host could not prepare the run (a script's run
			// directory on a full disk): nothing refused the order.
			status = order.StatusFailed
		}
		return postgres.Finish{Status: status, Result: order.Result{Error: err.Error()},
			Detail: map[string]any{"reason": reason(err)}}, -1, false
	}
	if prep.Cleanup != nil {
		defer prep.Cleanup() // a script's run directory
	}
	if o.Kind == order.KindExec {
		// The API's deny rules, on the path the command resolved to here.
		if err := policy.DenyResolved(o.Policy, o.Command, prep.ResolvedPath, o.Args); err != nil {
			return postgres.Finish{Status: order.StatusRejected, Result: order.Result{Error: err.Error()},
				Detail: map[string]any{"reason": reason(err), "resolved_path": prep.ResolvedPath}}, -1, false
		}
	}
	if o.DryRun {
		return postgres.Finish{Status: order.StatusSucceeded,
			Detail: map[string]any{"dry_run": true, "resolved_path": prep.ResolvedPath}}, -1, false
	}

	signals := make(chan syscall.Signal, 4)
	w.mu.Lock()
	w.current = &running{id: o.ID, signals: signals}
	woken := w.earlyWake == o.ID
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.current = nil
		w.mu.Unlock()
	}()
	if woken || o.Attempt > 1 {
		// An attempt after the first follows one that was claimed before
		// (handed back by a stopping worker, or requeued): a cancel
		// recorded then woke a worker that no longer runs it, and the
		// heartbeat below would find it only a third of the ack wait on.
		w.applyCancel(ctx, o.ID, woken)
	}

	// The process outlives ctx by the shutdown grace: a worker asked to stop
	// lets the current order finish, then kills it.
	execCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var stoppedIt atomic.Bool // the shutdown grace passed: the worker ended the order
	stopTimers := w.orderTimers(ctx, msg, o, execCtx, func() {
		stoppedIt.Store(true)
		cancel()
	})
	defer stopTimers()
	req := prep.Req
	req.OrderID = o.ID
	var out *liveOut // nil when nothing is captured
	if req.CaptureStdout || req.CaptureStderr {
		// Live output for SSE followers, up to the stored cap per order so
		// a flood of output cannot flood the bus.
		// Both streams call it concurrently.
		out = new(liveOut)
		out.pub.Attempt = o.Attempt
		out.budget.Store(req.MaxOutput)
		req.Captured = &out.captured
		req.OnOutput = func(stream string, p []byte) {
			at := &out.at[0]
			if stream == "stderr" {
				at = &out.at[1]
			}
			offset := *at
			*at += int64(len(p))
			left := out.budget.Add(-int64(len(p))) + int64(len(p))
			if left <= 0 {
				return
			}
			var err error
			if int64(len(p)) >= left {
				// The chunk that reaches the cap says so: a follower
				// then knows why live output stops here (not a loss).
				err = out.pub.PublishLast(w.q, &out.captured, o.Host, o.ID, stream, offset, p[:left], req.MaxOutput)
			} else {
				err = out.pub.Publish(w.q, &out.captured, o.Host, o.ID, stream, offset, p)
			}
			if err != nil {
				w.logger.Debug("publish live output", "order_id", o.ID, "error", err)
			}
		}
	}
	// The fence on the process: it is recorded only while this attempt
	// still owns the order, or killed at once (see RecordProcess). A
	// leader that exited within RecordWait has its record written with
	// the result, under the result's guard: nothing of the order runs
	// past Run's end (the executor ends the rest of it before it returns),
	// so the record would only cost a commit of its own. An order with
	// a cgroup of its own waits longer (cgroupRecordWait): its successor
	// ends it by the cgroup's name, with or without a record. Without a
	// cgroup the executor says exited only when nothing else of the
	// order's session is alive either: a record is all a successor finds
	// what the leader left running by; and it waits longer
	// (aloneRecordWait) only while the leader is runnable and alone,
	// and dies with the worker (its parent-death signal not cleared:
	// executor's diesWithWorker).
	var record *postgres.Process
	req.ExitWait = w.opts.RecordWait
	if req.CgroupParent != "" {
		req.ExitWait = max(req.ExitWait, cgroupRecordWait)
	} else {
		req.AloneWait = aloneRecordWait
	}
	req.OnStart = func(p executor.Process, exited bool) error {
		rec := postgres.Process{PID: p.PID, PGID: p.PGID, StartTime: p.StartTime, BootID: p.BootID,
			MachineID: p.MachineID, PidNS: p.PidNS, Cgroup: p.Cgroup}
		if exited {
			record = &rec
		} else {
			// Not for the whole shutdown grace: the order runs on
			// unrecorded meanwhile, and a worker stopped while
			// PostgreSQL refused the record waited the grace out. Given
			// up, the start is refused and the order ended now.
			rctx, rcancel := w.stopWindow(execCtx, ctx)
			err := w.retry(rctx, msg, "record the order's process", func(ctx context.Context) error {
				return w.watchWait(ctx, "record the order's process", o.ID, uuid.Nil, func(ctx context.Context) error {
					return w.store.RecordProcess(ctx, o.ID, o.Attempt, w.opts.Instance, rec)
				})
			})
			rcancel()
			if err != nil {
				return err
			}
		}
		return w.failPoint("after_start", o)
	}
	if w.settleHook == nil {
		w.settleHook = w.settleUnsettled
	}
	req.Started = w.settleHook
	var res executor.Result
	started := time.Now() // the record's date when it goes with the result
	if prep.Native != nil {
		w.settleUnsettled() // its job's fence and D-Bus call are no start to wait for
		// An action's systemd verb over D-Bus: no process. Its fence is
		// checked just before the job is queued, as a process's record
		// is just after it starts, and the job's queuing checked after.
		res = prep.Native(execCtx, w.jobFence(ctx, msg, o, prep.ResolvedPath))
	} else {
		res = w.exec.Run(execCtx, req, signals)
	}
	if out != nil {
		// Before the result is written: nothing it publishes again after
		// a NATS restart may follow the finished event, after which the
		// API frees the order's live messages (queue.FreeLive).
		out.pub.Stop()
	}
	if errors.Is(res.StartErr, executor.ErrNotStarted) {
		return f, -1, true
	}
	f = finishOf(res)
	if f.Result.Stdout.Truncated || f.Result.Stderr.Truncated {
		// The cap that cut it, this host's worker.max_output_bytes or the
		// order's own, lower one: no API can know another machine's
		// (stage0's truncation warning names it; postgres.OutputCapOf).
		f.Detail["output_cap"] = int(req.MaxOutput)
	}
	f.Record, f.Started = record, started
	if f.Status == order.StatusCanceled {
		// Said as the API says a cancel of a queued order, by whom.
		w.mu.Lock()
		actor := w.current.actor
		w.mu.Unlock()
		f.Result.Error = "canceled by " + actor + strings.TrimPrefix(f.Result.Error, "canceled")
	}
	if f.Status == order.StatusKilled && stoppedIt.Load() {
		// Nobody cancelled it: say why it was killed.
		f.Result.Error = fmt.Sprintf("killed because the worker stopped: worker.shutdown_grace (%s) passed", w.opts.ShutdownGrace)
	}
	if (out == nil || !out.pub.Published()) && startedTTL(o) > 0 {
		w.alone = o.ID
	}
	return f, res.Duration, false
}

// closeSpilled closes the files f's spilled outputs are in
// (executor.SpillTo): the result is written, or given up.
func closeSpilled(f postgres.Finish) {
	for _, s := range f.Spilled {
		if c, ok := s.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// liveOut is an order's live output: one allocation for a captured
// order, nothing more until its first chunk (queue.LiveOutput).
type liveOut struct {
	budget atomic.Int64 // bytes left to publish, of the order's output cap
	// at: bytes of stdout and stderr so far; one goroutine per stream
	// calls OnOutput, so each has one writer.
	at  [2]int64
	pub queue.LiveOutput
	// captured: the executor's capture, which pub publishes again from
	// after a NATS restart.
	captured executor.Captured
}

// jobFence is the fence of an action's systemd job (systemd.Fence).
//
// Before: the order is still running under this attempt, for this worker,
// on a host it owns (Store.OwnsAttempt), and then, the last thing before
// the D-Bus call, the lease was renewed less than half a lease ago
// (hold.dispatchable): a worker stopped after PostgreSQL's answer and
// woken past its lease, once a successor recorded the run interrupted,
// queued the job anyway (docs/decisions.md, "The restart button's frozen
// worker window"). A renewal late by more than that is waited for, and
// the check in PostgreSQL made again.
//
// Queued: the check again, with a "job_after_takeover" event written when
// the order is no longer this attempt's: a worker stopped between the
// checks and the call (a few instructions) queues a job no check can
// refuse, and the event says so where the order's history is. The job is
// not cancelled: systemd merges a job for a unit into the one it holds,
// so the id may be a successor's own run of the unit.
func (w *Worker) jobFence(ctx context.Context, msg jetstream.Msg, o *order.Order, what string) *systemd.Fence {
	h := w.hold
	return &systemd.Fence{
		Before: func(nctx context.Context) error {
			// As a process's record: stopWriteWait once stopping.
			wctx, cancel := w.stopWindow(nctx, ctx)
			defer cancel()
			for {
				var owns bool
				if err := w.retry(wctx, msg, "check the order is still this attempt's", func(ctx context.Context) (err error) {
					owns, err = w.store.OwnsAttempt(ctx, o.ID, o.Attempt, w.opts.Instance)
					return err
				}); err != nil {
					return err
				}
				if !owns {
					return fmt.Errorf("order %s is no longer running under attempt %d of this worker (%s): taken over", o.ID, o.Attempt, w.opts.Instance)
				}
				if err := w.failPoint("job_fenced", o); err != nil {
					return err
				}
				waited, err := h.dispatchable(wctx)
				if err != nil {
					w.logger.Warn("the order's systemd job is not queued: the host may be another worker's by now", "order_id", o.ID, "error", err)
					return fmt.Errorf("order %s: %w", o.ID, err)
				}
				if !waited {
					return w.failPoint("before_job", o)
				}
			}
		},
		Queued: func(nctx context.Context, job int) {
			wctx, cancel := w.stopWindow(nctx, ctx)
			defer cancel()
			var (
				lost  bool
				check postgres.JobCheck // one across the retries: a lost commit's event is not written twice
			)
			if err := w.retry(wctx, msg, "check the order was still this attempt's when its job was queued", func(ctx context.Context) (err error) {
				lost, err = w.store.JobAfterTakeover(ctx, &check, o.ID, o.Attempt, w.opts.Instance,
					map[string]any{"job_id": job, "job": what, "lease_renewed_ago_ms": h.leaseAge().Milliseconds()})
				return err
			}); err != nil {
				w.logger.Error("the order's job was queued and whether it was still this attempt's then is unknown", "order_id", o.ID, "job_id", job, "error", err)
				return
			}
			if lost {
				w.logger.Error("the order's systemd job was queued after the order was taken over: it may run after the order's recorded end (event job_after_takeover)",
					"order_id", o.ID, "attempt", o.Attempt, "job_id", job, "job", what)
			}
		},
	}
}

// recordWait is how long the worker gives an order's leader to exit
// before it commits the order's process record on its own: a command that
// is done by then (a `true`, a quick check) has its record written with
// its result, one flushed commit per order instead of two. The order runs
// meanwhile, so the wait costs it nothing; it lengthens the time an order
// runs unrecorded, which matters with process groups only (with a cgroup
// the successor finds the order by its name), by about what a flushed
// commit takes on a loaded machine. 2 ms caught 86 – 93 % of the `true`s
// under load, 10 ms all but one in 300 (docs/decisions.md, "The process
// record: with the result, or committed without waiting for the flush").
var recordWait = 10 * time.Millisecond

// cgroupRecordWait is recordWait for an order that runs in a cgroup of
// its own: one that runs unrecorded leaves nothing a successor cannot
// find (reap ends the order's cgroup by its name, and sweepCgroups the
// cgroup of an order that ended unrecorded), so the wait is bounded only
// by what it delays: a cancel or a timeout is acted on after it. A
// machine at load average 20 took 10 ms and more for one `true`.
const cgroupRecordWait = 100 * time.Millisecond

// aloneRecordWait is how long in all the executor gives the leader of
// an order without a cgroup to exit while it is runnable and the only
// process of its session (executor.Request.AloneWait): one that is
// waiting for a processor, a `true` on a loaded host, not one that
// runs long. Such a leader dies with the worker, leaving nothing a
// record would find; at load average 20, 70 % of the `true`s of a
// backlog were not done within recordWait, each a flushed commit of
// its own. A cancel or a timeout is acted on after the wait, as with
// cgroupRecordWait.
const aloneRecordWait = 100 * time.Millisecond

// orderTimers keeps a running order alive and bounds a shutdown: every
// third of the ack wait it tells the server the order is in progress,
// records the order's heartbeat and picks up a cancel whose wake-up was
// lost on the bus; once ctx ends (the worker is stopping) it calls kill
// after the shutdown grace. The returned func stops both; after it
// returns no new beat or kill starts (one under way may still finish, as
// with the select loop this replaces).
//
// Timers, not a goroutine with a ticker per order: an order of a few
// milliseconds then costs no goroutine and no wake-up of its own
// (docs/benchmarks.md, "Serve's hand-offs per order, counted").
// context.AfterFunc on the worker's context starts nothing until it ends.
func (w *Worker) orderTimers(ctx context.Context, msg jetstream.Msg, o *order.Order, execCtx context.Context, kill func()) (stop func()) {
	var mu sync.Mutex
	ended := false
	var beat, grace *time.Timer
	every := w.opts.AckWait / 3
	mu.Lock()
	defer mu.Unlock()
	beat = time.AfterFunc(every, func() {
		_ = msg.InProgress()
		if err := w.store.TouchProcess(execCtx, o.ID, o.Attempt); err != nil {
			w.logger.Debug("record the order's heartbeat", "order_id", o.ID, "error", err)
		}
		// A cancel whose wake-up was lost on the bus.
		w.applyCancel(execCtx, o.ID, false)
		mu.Lock()
		if !ended {
			beat.Reset(every) // after the beat: beats never overlap
		}
		mu.Unlock()
	})
	stopWatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return
		}
		// Said when the wait begins: after serve's "shutting down" a stop
		// was up to shutdown_grace of silence, which a second Ctrl-C does
		// not shorten, and the operator could not tell a wait from a hang.
		w.logger.Info("stopping: the running order may finish first; it is killed when worker.shutdown_grace passes",
			"order_id", o.ID, "principal", o.Principal, "command", o.Command, "shutdown_grace", w.opts.ShutdownGrace.String(),
			"kill_at", time.Now().Add(w.opts.ShutdownGrace).UTC().Format(time.RFC3339))
		grace = time.AfterFunc(w.opts.ShutdownGrace, func() {
			mu.Lock()
			over := ended
			mu.Unlock()
			if !over {
				kill()
			}
		})
	})
	return func() {
		stopWatch()
		mu.Lock()
		ended = true
		beat.Stop()
		if grace != nil {
			grace.Stop()
		}
		mu.Unlock()
	}
}

// finishOf maps an execution result to the order's terminal status.
func finishOf(res executor.Result) postgres.Finish {
	r := order.Result{ExitCode: res.ExitCode, Signal: res.Signal, DurationMS: res.Duration.Milliseconds(),
		Stdout: res.Stdout, Stderr: res.Stderr}
	f := postgres.Finish{Result: r, Detail: map[string]any{"group_gone": res.GroupGone, "verified": res.Verified}}
	// Not assigned as they are: a nil *Spill is no nil SpilledOutput.
	if res.StdoutSpill != nil {
		f.Spilled[0] = res.StdoutSpill
	}
	if res.StderrSpill != nil {
		f.Spilled[1] = res.StderrSpill
	}
	if res.Escaped {
		f.Detail["escaped"] = true
	}
	if res.Adopted > 0 {
		f.Detail["adopted"] = res.Adopted
	}
	if res.Process.PID != 0 {
		f.Processes = map[string]any{"verified": res.Verified, "group_gone": res.GroupGone, "pgid": res.Process.PGID}
		if res.Escaped {
			f.Processes["escaped"] = true
		}
		// Processes of the order that left its session, ended as the
		// worker's orphans (executor.AdoptOrphans).
		if res.Adopted > 0 {
			f.Processes["adopted"] = res.Adopted
		}
		if res.Process.Cgroup != "" {
			f.Processes["cgroup"] = res.Process.Cgroup
		}
	}
	switch {
	case res.Aborted != nil:
		f.Status = order.StatusFailed
		f.Result.Error = "aborted at start: " + res.Aborted.Error()
	case errors.Is(res.StartErr, executor.ErrCanceledBeforeStart):
		// Nothing of it ran: canceled, as a cancel of a queued order is.
		f.Status = order.StatusCanceled
		f.Result.Error = res.StartErr.Error()
	case res.StartErr != nil:
		f.Status = order.StatusFailed
		f.Result.Error = "start: " + res.StartErr.Error()
	case res.TimedOut:
		f.Status = order.StatusTimedOut
		f.Result.Error = "timed out"
	case res.Canceled:
		f.Status = order.StatusKilled
	case res.ExitCode != nil && *res.ExitCode == 0:
		f.Status = order.StatusSucceeded
	default:
		f.Status = order.StatusFailed
		// A SIGKILL alone reads as someone's kill -9.
		f.Result.Error = res.OOMKill
	}
	return f
}

// complete writes the result, retrying for as long as PostgreSQL is away:
// a result is never dropped while the worker runs, and for up to the
// shutdown grace once it is stopping. A conflict means the order is no
// longer running under this attempt: an earlier write whose answer was
// lost recorded this result (stored), or someone else settled the order
// (a successor interrupted it, an admin abandoned it: not stored, and
// the "result not recorded" line says so).
func (w *Worker) complete(ctx context.Context, msg jetstream.Msg, o *order.Order, f postgres.Finish) (stored bool, err error) {
	wctx, cancel := w.writeContext(ctx)
	defer cancel()
	return w.completeIn(wctx, msg, o, f)
}

// completeIn is complete within wctx, a write's context (writeContext).
func (w *Worker) completeIn(wctx context.Context, msg jetstream.Msg, o *order.Order, f postgres.Finish) (stored bool, err error) {
	err = w.retry(wctx, msg, "write result", func(ctx context.Context) error {
		return w.watchWait(ctx, "write result", o.ID, uuid.Nil, func(ctx context.Context) error {
			return w.store.Complete(ctx, o.ID, o.Attempt, f)
		})
	})
	if order.ErrorCode(err) == order.CodeConflict {
		// Refused, or written by an earlier try whose answer was lost
		// (the retry then finds the order no longer running): the row
		// tells which.
		cur, gerr := w.store.GetOrder(wctx, o.ID)
		switch {
		case gerr == nil && cur.Attempt == o.Attempt && cur.Status == f.Status:
			return true, nil
		case gerr == nil && cur.Status == order.StatusQueued && cur.Attempt < o.Attempt:
			return w.completeLostClaim(wctx, msg, o, cur, f)
		case errors.Is(gerr, order.ErrNotFound):
			// The order itself is gone with the claim: nothing to
			// write to, and this line is the only record of its run.
			how := []any{"order_id", o.ID, "attempt", o.Attempt, "status", f.Status}
			if f.Result.ExitCode != nil {
				how = append(how, "exit_code", *f.Result.ExitCode)
			}
			w.logger.Error("result not recorded: the order this worker ran is not in the database (a failover to a standby behind the primary, or a restore)",
				how...)
			return false, nil
		}
		if gerr == nil && !cur.Status.Terminal() {
			// Queued again (Requeue: a successor that took the host
			// judged this worker gone and its idempotent order safe to
			// run again), or claimed again since: the message is that
			// next attempt's, redelivered by the host's owner in stream
			// order. Acknowledged here, it left the work queue while
			// the order stayed queued, never to run again, until the
			// lost-order search canceled it a minute later ("its message
			// is gone from the ORDERLY_ORDERS stream"; TestFaultsFleet).
			w.logger.Warn("result not recorded: the order was queued again for another attempt; its message is left to it", "order_id", o.ID,
				"attempt", o.Attempt, "status", cur.Status, "recorded_attempt", cur.Attempt)
			return false, errLeftToNextAttempt
		}
		w.logger.Warn("result not recorded: the order is no longer running under this attempt", "order_id", o.ID,
			"attempt", o.Attempt, "error", err)
		return false, nil
	}
	return err == nil, err
}

// errLeftToNextAttempt is complete's answer for a result refused because
// the order is queued or running again under another attempt: its
// message must not be acknowledged.
var errLeftToNextAttempt = errors.New("the order's message is left to its next attempt")

// completeLostClaim records the result of o, which ran, though
// PostgreSQL holds it queued at an attempt below the one it ran under
// (cur): the claim committed before the run is gone, with whatever
// followed it (a failover to a standby the commits had not reached, a
// restore from a backup taken before them). Left queued, with its
// message acknowledged, the order was canceled a minute later as lost
// from the stream, its outcome unknown, while this worker had it. It is
// claimed again and its result written under that claim: nobody else
// can have run it meanwhile, since its message is still this worker's
// (unacknowledged) and the claim is fenced to the host's owner. Its
// deadline to start, its waiter and its parent run are not asked about
// (Store.ClaimRan): it started. A claim refused (the host taken over,
// the order ended meanwhile) leaves it as before.
func (w *Worker) completeLostClaim(ctx context.Context, msg jetstream.Msg, o, cur *order.Order, f postgres.Finish) (bool, error) {
	var (
		again   *order.Order
		claimed bool
	)
	err := w.retry(ctx, msg, "claim again an order whose claim PostgreSQL lost", func(ctx context.Context) (err error) {
		return w.watchWait(ctx, "claim again", o.ID, uuid.Nil, func(ctx context.Context) (err error) {
			again, claimed, err = w.store.ClaimRan(ctx, o.ID, w.opts.Instance, o.StreamSeq)
			return err
		})
	})
	// A try whose answer was lost reads the claim back as this
	// instance's.
	if err == nil && !claimed && again != nil && again.Status == order.StatusRunning && again.Worker == w.opts.Instance &&
		again.Attempt > cur.Attempt {
		claimed = true
	}
	if err != nil || !claimed {
		w.logger.Warn("result not recorded: PostgreSQL lost the order's claim after it ran, and it could not be claimed again",
			"order_id", o.ID, "attempt", o.Attempt, "recorded_attempt", cur.Attempt, "error", err)
		return false, nil
	}
	w.logger.Error("PostgreSQL lost this order's claim after it ran (a failover to a standby behind the primary, or a restore): claimed again to record its result",
		"order_id", o.ID, "attempt", o.Attempt, "recorded_attempt", again.Attempt)
	under := *o
	under.Attempt = again.Attempt
	return w.completeIn(ctx, msg, &under, f)
}

// stopWriteWait is how long a write of the delivery protocol (a claim, a
// result, a process record) may go on once the worker is asked to stop:
// from the stop request, or from the write's start when the stop came
// before it (an order that ran on through its shutdown grace). It was the
// whole shutdown grace, which a retry loop held while PostgreSQL refused
// or did not answer: a worker stopped then (operators stop workers when
// things are broken) took 30 s to exit (hF11's rolled-back schema). A
// write that gives up leaves what it wrote, or did not, to the successor's
// takeover, as a worker killed then would.
const stopWriteWait = 5 * time.Second

// writeContext is the context of a write the protocol must not cut short
// at once (a claim, a result): a stop request (ctx ending) leaves it
// stopWriteWait (at most ShutdownGrace) to commit, so that a commit in
// flight is not dropped, nor its answer lost, just because the worker is
// stopping, and a retry loop waiting for PostgreSQL does not hold the
// stop.
//
// Until ctx ends, every write shares one such context (writes): each
// write ends stopWriteWait after the stop either way, and a context of
// its own per claim and per result cost a cancel context, an AfterFunc
// on ctx and their closures, 14 allocations per order
// (TestWorkerOrderAllocations). Once ctx has ended, a write gets its own,
// whose wait runs from its start.
func (w *Worker) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() != nil {
		return w.stopWindow(context.WithoutCancel(ctx), ctx)
	}
	if w.writes.of != ctx {
		// Not canceled when the write is done: it ends by itself
		// stopWriteWait after ctx, which stays registered with ctx
		// until then, one for each ctx the worker handled orders in.
		w.writes.of = ctx
		w.writes.ctx, _ = w.stopWindow(context.WithoutCancel(ctx), ctx)
	}
	return w.writes.ctx, func() {}
}

// stopWindow is parent, ended stopWriteWait (at most ShutdownGrace) after
// stop ends.
func (w *Worker) stopWindow(parent, stop context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(parent)
	wait := min(stopWriteWait, w.opts.ShutdownGrace)
	after := context.AfterFunc(stop, func() {
		time.AfterFunc(wait, func() {
			cancel(fmt.Errorf("%w: PostgreSQL did not take the write within %s of the stop", errStopping, wait))
		})
	})
	return wctx, func() { after(); cancel(nil) }
}

// errStopping ends a write that a stop request gave up on.
var errStopping = errors.New("the worker is stopping")

// retry calls fn until it succeeds or fails for good, waiting with a
// backoff while PostgreSQL is away and keeping msg's ack timer fresh
// meanwhile. It gives up when ctx ends. Nothing else is processed while it
// waits: giving up on a message and taking the next one would break the
// host's order.
func (w *Worker) retry(ctx context.Context, msg jetstream.Msg, what string, fn func(context.Context) error) error {
	b := backoff{min: 50 * time.Millisecond, max: 2 * time.Second}
	for {
		err := fn(ctx)
		if err == nil || permanent(err) {
			if err == nil {
				w.pgReached()
			}
			return err
		}
		if ctx.Err() != nil {
			w.gaveUp(ctx, what, err)
			return err
		}
		if unreachable(err) {
			w.pgFailed(what, err)
		} else {
			w.logger.Warn(what+"; retrying", "error", err)
		}
		_ = msg.InProgress()
		if b.wait(ctx) != nil {
			w.gaveUp(ctx, what, err)
			return err
		}
	}
}

// gaveUp says that a write a stop request ended was given up (stopWindow):
// without it a worker stopped while PostgreSQL failed exited 0 with its
// last line a retry, and nothing said what it left undone.
func (w *Worker) gaveUp(ctx context.Context, what string, err error) {
	if cause := context.Cause(ctx); errors.Is(cause, errStopping) {
		w.logger.Warn(what+"; given up", "reason", cause.Error(), "error", err)
	}
}

// permanent tells the errors a retry cannot change.
func permanent(err error) bool {
	return errors.Is(err, postgres.ErrNotOwner) || errors.Is(err, postgres.ErrWaiterGone) || errors.Is(err, order.ErrNotFound) || errors.Is(err, errNotHeld) ||
		order.ErrorCode(err) == order.CodeConflict
}

func (w *Worker) failPoint(point string, o *order.Order) error {
	if w.opts.FailPoint == nil {
		return nil
	}
	if err := w.opts.FailPoint(point, o); err != nil {
		return fmt.Errorf("%w %s: %w", errCrash, point, err)
	}
	return nil
}

// startedTTL is the TTL of o's started event in the live stream
// (queue.StartedTTL): by its timeout, which bounds an exec's or a
// script's run (the host policy's Prepare runs it for that long). None
// for an action, whose run the worker's own definition bounds.
func startedTTL(o *order.Order) time.Duration {
	if o.Kind == order.KindAction {
		return 0
	}
	return queue.StartedTTL(o.Timeout, o.Idempotent)
}

func (w *Worker) event(o *order.Order, typ string, st order.Status) {
	w.publishEvent(queue.Event{OrderID: o.ID, Type: typ, Status: string(st), Host: o.Host})
}

func (w *Worker) publishEvent(ev queue.Event) {
	if err := w.q.PublishEvent(ev); err != nil {
		w.logger.Debug("publish event", "order_id", ev.OrderID, "error", err)
	}
}

// quoteKeys lists keys as "a", "b".
func quoteKeys(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	return strings.Join(q, ", ")
}

func reason(err error) string {
	var e *order.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
