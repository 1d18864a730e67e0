package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/worker/executor"
)

// handle runs the delivery protocol (DESIGN §2.2) starting with msg:
// claim, or settle a redelivery without executing; execute; write the
// result guarded by the attempt; ack only after the commit. When the next
// message is already waiting once an order has run, its claim is written
// in the same transaction as the result (pipelining keeps the order: one
// order at a time, in stream order), so handle may run several orders.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg, msgs <-chan jetstream.Msg) error {
	for msg != nil {
		o, claimed, err := w.begin(ctx, msg)
		if err != nil || !claimed {
			return err
		}
		if msg, err = w.execute(ctx, msg, o, msgs); err != nil {
			return err
		}
	}
	return nil
}

// orderID reads the order id and stream sequence of a message.
func orderID(msg jetstream.Msg) (uuid.UUID, uint64, error) {
	id, err := uuid.ParseBytes(msg.Data())
	if err != nil {
		return uuid.Nil, 0, fmt.Errorf("message on %s is not an order id", msg.Subject())
	}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	return id, seq, nil
}

// begin claims the message's order, or settles a delivery of an order that
// is not queued. claimed reports whether the caller must execute it.
func (w *Worker) begin(ctx context.Context, msg jetstream.Msg) (*order.Order, bool, error) {
	id, seq, err := orderID(msg)
	if err != nil {
		// Not an order id: nothing we could ever run. Drop it for good.
		_ = msg.Term()
		return nil, false, err
	}
	o, claimed, err := w.store.Claim(ctx, id, w.opts.Instance, seq)
	if errors.Is(err, order.ErrNotFound) {
		_ = msg.Term()
		return nil, false, fmt.Errorf("order %s is not in the database; message dropped", id)
	}
	if err != nil {
		// PostgreSQL unreachable: leave the message for a later attempt.
		_ = msg.NakWithDelay(time.Second)
		return nil, false, fmt.Errorf("claim order %s: %w", id, err)
	}
	if !claimed {
		return nil, false, w.settle(ctx, msg, o)
	}
	return o, true, nil
}

// execute runs a claimed order and records its result. It returns a
// message still to begin, when the pipelined claim of the next one could
// not be made.
func (w *Worker) execute(ctx context.Context, msg jetstream.Msg, o *order.Order, msgs <-chan jetstream.Msg) (jetstream.Msg, error) {
	for {
		if err := w.failPoint("after_claim", o); err != nil {
			return nil, err
		}
		w.logger.Info("order started", "order_id", o.ID, "principal", o.Principal, "attempt", o.Attempt,
			"stream_seq", o.StreamSeq, "command", o.Command)
		w.event(o, "started", order.StatusRunning)

		finish, ran := w.run(ctx, msg, o)
		if err := w.failPoint("after_exec", o); err != nil {
			return nil, err
		}
		finish.Actor = w.opts.Instance

		next := ready(ctx, msgs)
		nextID, nextSeq, err := uuid.Nil, uint64(0), error(nil)
		if next != nil {
			nextID, nextSeq, err = orderID(next)
			if err != nil {
				_ = next.Term()
				next = nil
			}
		}
		if next == nil {
			// Without the result committed we must not ack: the redelivery
			// will mark the order interrupted.
			if err := w.complete(ctx, o, finish); err != nil {
				return nil, err
			}
			w.finished(msg, o, finish, ran)
			return nil, nil
		}
		step, err := w.store.CompleteAndClaim(ctx, o.ID, o.Attempt, finish, nextID, w.opts.Instance, nextSeq)
		if err != nil {
			// Neither happened, or we cannot know: write the result alone
			// (its guard makes a repeat harmless) and claim the next afresh.
			w.logger.Warn("pipelined result and claim failed; writing the result alone", "order_id", o.ID, "error", err)
			if err := w.complete(ctx, o, finish); err != nil {
				return nil, err
			}
			w.finished(msg, o, finish, ran)
			return next, nil
		}
		if step.Done != nil {
			w.logger.Warn("result not recorded: the order changed meanwhile", "order_id", o.ID, "error", step.Done)
			_ = msg.Ack()
		} else {
			w.finished(msg, o, finish, ran)
		}
		switch {
		case step.Claimed:
			msg, o = next, step.Next
		case step.Next != nil:
			return nil, w.settle(ctx, next, step.Next)
		default:
			return next, nil
		}
	}
}

// ready returns the next message if one is already waiting, without
// blocking; none while the worker is stopping.
func ready(ctx context.Context, msgs <-chan jetstream.Msg) jetstream.Msg {
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

// finished acks an order whose result is committed, and reports it.
func (w *Worker) finished(msg jetstream.Msg, o *order.Order, f postgres.Finish, ran time.Duration) {
	if err := msg.Ack(); err != nil {
		w.logger.Warn("ack order", "order_id", o.ID, "error", err)
	}
	w.opts.Metrics.Finished(o.Host, f.Status, ran)
	w.logger.Info("order finished", "order_id", o.ID, "principal", o.Principal, "status", f.Status,
		"exit_code", exitCode(f.Result), "duration_ms", f.Result.DurationMS)
	w.event(o, "finished", f.Status)
}

// settle handles a delivery of an order this worker could not claim: a
// running one was started by an attempt that never finished, so its outcome
// is unknown and it becomes interrupted (never executed twice); a terminal
// one is a duplicate and is only acked.
func (w *Worker) settle(ctx context.Context, msg jetstream.Msg, o *order.Order) error {
	if o.Status == order.StatusRunning {
		ok, err := w.store.Interrupt(ctx, o.ID, w.opts.Instance, fmt.Sprintf("redelivered while running (attempt %d); the previous worker stopped before recording a result", o.Attempt))
		if err != nil {
			_ = msg.NakWithDelay(time.Second)
			return err
		}
		if ok {
			w.logger.Warn("order interrupted", "order_id", o.ID, "attempt", o.Attempt)
			w.opts.Metrics.Finished(o.Host, order.StatusInterrupted, -1)
			w.event(o, "finished", order.StatusInterrupted)
		}
	}
	if err := msg.Ack(); err != nil {
		w.logger.Warn("ack order", "order_id", o.ID, "error", err)
	}
	return nil
}

// run checks the host policy and executes the order, keeping the message
// alive with InProgress while the process runs. ran is how long the process
// ran, or -1 when nothing was executed.
func (w *Worker) run(ctx context.Context, msg jetstream.Msg, o *order.Order) (f postgres.Finish, ran time.Duration) {
	if o.ExpiresAt != nil && time.Now().After(*o.ExpiresAt) {
		return postgres.Finish{Status: order.StatusExpired, Result: order.Result{Error: "deadline passed before the order started"}}, -1
	}
	prep, err := w.policy.Prepare(o)
	if err != nil {
		return postgres.Finish{Status: order.StatusRejected, Result: order.Result{Error: err.Error()},
			Detail: map[string]any{"reason": reason(err)}}, -1
	}
	if o.DryRun {
		return postgres.Finish{Status: order.StatusSucceeded,
			Detail: map[string]any{"dry_run": true, "resolved_path": prep.ResolvedPath}}, -1
	}

	signals := make(chan syscall.Signal, 4)
	w.mu.Lock()
	w.current = &running{id: o.ID, signals: signals}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.current = nil
		w.mu.Unlock()
	}()

	// The process outlives ctx by the shutdown grace: a worker asked to stop
	// lets the current order finish, then kills it.
	execCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		ticker := time.NewTicker(w.opts.AckWait / 3)
		defer ticker.Stop()
		var grace <-chan time.Time
		stopping := ctx.Done()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				_ = msg.InProgress()
			case <-stopping:
				stopping = nil
				grace = time.After(w.opts.ShutdownGrace)
			case <-grace:
				cancel()
			}
		}
	}()
	req := prep.Req
	if req.CaptureStdout || req.CaptureStderr {
		// Live output for SSE followers, up to the stored cap per order so
		// a flood of output cannot flood the bus.
		// Both streams call it concurrently.
		var budget atomic.Int64
		budget.Store(req.MaxOutput)
		req.OnOutput = func(stream string, p []byte) {
			left := budget.Add(-int64(len(p))) + int64(len(p))
			if left <= 0 {
				return
			}
			if int64(len(p)) > left {
				p = p[:left]
			}
			if err := w.q.PublishOutput(o.ID, stream, p); err != nil {
				w.logger.Debug("publish live output", "order_id", o.ID, "error", err)
			}
		}
	}
	res := w.exec.Run(execCtx, req, signals)
	return finishOf(res), res.Duration
}

// finishOf maps an execution result to the order's terminal status.
func finishOf(res executor.Result) postgres.Finish {
	r := order.Result{ExitCode: res.ExitCode, Signal: res.Signal, DurationMS: res.Duration.Milliseconds(),
		Stdout: res.Stdout, Stderr: res.Stderr}
	f := postgres.Finish{Result: r, Detail: map[string]any{"group_gone": res.GroupGone}}
	switch {
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
	}
	return f
}

// complete writes the result, retrying while PostgreSQL is briefly away.
func (w *Worker) complete(ctx context.Context, o *order.Order, f postgres.Finish) error {
	wctx := context.WithoutCancel(ctx)
	delay := 100 * time.Millisecond
	deadline := time.Now().Add(w.opts.AckWait)
	for {
		err := w.store.Complete(wctx, o.ID, o.Attempt, f)
		if err == nil || order.ErrorCode(err) == order.CodeConflict || time.Now().After(deadline) {
			return err
		}
		w.logger.Warn("write result; retrying", "order_id", o.ID, "error", err)
		time.Sleep(delay)
		delay = min(2*delay, 2*time.Second)
	}
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

func (w *Worker) event(o *order.Order, typ string, st order.Status) {
	if err := w.q.PublishEvent(queue.Event{OrderID: o.ID, Type: typ, Status: string(st), Host: o.Host}); err != nil {
		w.logger.Debug("publish event", "order_id", o.ID, "error", err)
	}
}

func reason(err error) string {
	var e *order.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

func exitCode(r order.Result) any {
	if r.ExitCode == nil {
		return nil
	}
	return *r.ExitCode
}
