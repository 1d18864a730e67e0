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

// handle runs the delivery protocol for one message (DESIGN §2.2): claim,
// or settle a redelivery without executing; execute; write the result
// guarded by the attempt; ack only after the commit.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) error {
	id, err := uuid.ParseBytes(msg.Data())
	if err != nil {
		// Not an order id: nothing we could ever run. Drop it for good.
		_ = msg.Term()
		return fmt.Errorf("message on %s is not an order id", msg.Subject())
	}
	var seq uint64
	if meta, err := msg.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	o, claimed, err := w.store.Claim(ctx, id, w.opts.Instance, seq)
	if errors.Is(err, order.ErrNotFound) {
		_ = msg.Term()
		return fmt.Errorf("order %s is not in the database; message dropped", id)
	}
	if err != nil {
		// PostgreSQL unreachable: leave the message for a later attempt.
		_ = msg.NakWithDelay(time.Second)
		return fmt.Errorf("claim order %s: %w", id, err)
	}
	log := w.logger.With("order_id", id, "principal", o.Principal)
	if !claimed {
		return w.settle(ctx, msg, o)
	}
	if err := w.failPoint("after_claim", o); err != nil {
		return err
	}
	log.Info("order started", "attempt", o.Attempt, "stream_seq", seq, "command", o.Command)
	w.event(o, "started", order.StatusRunning)

	finish, ran := w.run(ctx, msg, o)
	if err := w.failPoint("after_exec", o); err != nil {
		return err
	}
	finish.Actor = w.opts.Instance
	if err := w.complete(ctx, o, finish); err != nil {
		// Without the result committed we must not ack: the redelivery will
		// mark the order interrupted.
		return err
	}
	if err := msg.Ack(); err != nil {
		log.Warn("ack order", "error", err)
	}
	w.opts.Metrics.Finished(o.Host, finish.Status, ran)
	log.Info("order finished", "status", finish.Status, "exit_code", exitCode(finish.Result), "duration_ms", finish.Result.DurationMS)
	w.event(o, "finished", finish.Status)
	return nil
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
