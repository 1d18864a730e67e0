// Package worker consumes one host's orders strictly one at a time in stream
// order and runs them: claim in PostgreSQL, check the host policy, execute,
// write the result guarded by the attempt, then ack (DESIGN §2).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// Store is what the worker needs of PostgreSQL.
type Store interface {
	Claim(ctx context.Context, id uuid.UUID, worker string, seq uint64) (*order.Order, bool, error)
	Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error
	CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
		nextID uuid.UUID, worker string, nextSeq uint64) (postgres.Step, error)
	Interrupt(ctx context.Context, id uuid.UUID, actor, reason string) (bool, error)
	TouchHost(ctx context.Context, host, version, instance string) error
}

// Preparer is the host policy: it turns an order into a process request or
// refuses it.
type Preparer interface {
	Prepare(o *order.Order) (*hostpolicy.Prepared, error)
}

// Runner executes a prepared process.
type Runner interface {
	Run(ctx context.Context, req executor.Request, signals <-chan syscall.Signal) executor.Result
}

// Options configure a Worker.
type Options struct {
	Host          string
	Instance      string // unique per process; defaults to a new UUID
	Version       string
	Heartbeat     time.Duration // KV heartbeat and lease renewal interval
	AckWait       time.Duration // the consumer's; InProgress is sent at a third of it
	ShutdownGrace time.Duration // how long a running order may finish on shutdown

	// FailPoint, when set, is called at named points of the protocol
	// ("after_claim", "after_exec"); a non-nil error makes the worker stop
	// right there as if it had crashed. Tests use it to inject failures.
	FailPoint func(point string, o *order.Order) error

	// Metrics records finished orders; nil records nothing.
	Metrics *metrics.Metrics
}

// Worker runs the orders of one host.
type Worker struct {
	opts   Options
	store  Store
	q      *queue.Queue
	policy Preparer
	exec   Runner
	logger *slog.Logger

	mu      sync.Mutex
	current *running // the order being executed, for cancel requests
}

type running struct {
	id      uuid.UUID
	signals chan syscall.Signal
}

// New returns a Worker; Run starts it.
func New(opts Options, store Store, q *queue.Queue, policy Preparer, exec Runner, logger *slog.Logger) *Worker {
	if opts.Instance == "" {
		opts.Instance = opts.Host + "/" + uuid.NewString()
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 5 * time.Second
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 30 * time.Second
	}
	return &Worker{opts: opts, store: store, q: q, policy: policy, exec: exec,
		logger: logger.With("host", opts.Host, "instance", opts.Instance)}
}

// errCrash marks a stop injected by a fail-point.
var errCrash = errors.New("fail-point")

// Run takes the host's lease (waiting as a standby while another worker
// holds it), then consumes orders until ctx is canceled. On cancellation it
// stops fetching, lets the current order finish for up to ShutdownGrace,
// then kills it.
func (w *Worker) Run(ctx context.Context) error {
	lease, err := w.q.AcquireLease(ctx, w.opts.Host, w.opts.Instance, func(holder string) {
		w.logger.Info("host lease held by another worker; waiting as standby", "holder", holder)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := w.q.Offline(rctx, w.opts.Host); err != nil {
			w.logger.Debug("remove heartbeat", "error", err)
		}
		if err := lease.Release(rctx); err != nil {
			w.logger.Debug("release lease", "error", err)
		}
	}()
	if err := w.store.TouchHost(ctx, w.opts.Host, w.opts.Version, w.opts.Instance); err != nil {
		return err
	}
	cons, err := w.q.HostConsumer(ctx, w.opts.Host)
	if err != nil {
		return err
	}
	ctl, err := w.q.SubscribeControl(w.opts.Host, w.control)
	if err != nil {
		return err
	}
	defer ctl.Unsubscribe()

	runCtx, stop := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop(nil)
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.beat(runCtx, lease, stop)
	}()

	iter, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume orders of host %s: %w", w.opts.Host, err)
	}
	// The feeder hands messages over one at a time; holding the next one
	// while an order runs is what lets its claim share the result's commit.
	msgs := make(chan jetstream.Msg)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(msgs)
		for {
			msg, err := iter.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || runCtx.Err() != nil {
					return
				}
				w.logger.Warn("fetch order", "error", err)
				continue
			}
			select {
			case msgs <- msg:
			case <-runCtx.Done():
				return // unacked: redelivered to whoever holds the host next
			}
		}
	}()
	defer iter.Stop()
	go func() {
		<-runCtx.Done()
		iter.Stop()
	}()
	w.logger.Info("worker consuming", "consumer", queue.ConsumerName(w.opts.Host))
	for {
		select {
		case <-runCtx.Done():
			if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return nil
		case msg, ok := <-msgs:
			if !ok {
				continue // the feeder stopped: runCtx is done
			}
			if err := w.handle(runCtx, msg, msgs); err != nil {
				if errors.Is(err, errCrash) {
					return err
				}
				w.logger.Error("handle order", "error", err)
			}
		}
	}
}

// beat renews the lease and publishes the heartbeat; losing the lease stops
// the worker, since another one now owns the host.
func (w *Worker) beat(ctx context.Context, lease *queue.Lease, stop context.CancelCauseFunc) {
	started := time.Now()
	t := time.NewTicker(w.opts.Heartbeat)
	defer t.Stop()
	touched := time.Now()
	for {
		info := queue.HostInfo{Host: w.opts.Host, Instance: w.opts.Instance, Version: w.opts.Version,
			StartedAt: started, LastSeen: time.Now()}
		w.mu.Lock()
		if w.current != nil {
			id := w.current.id
			info.CurrentOrder = &id
		}
		w.mu.Unlock()
		if err := w.q.Heartbeat(ctx, info); err != nil && ctx.Err() == nil {
			w.logger.Warn("heartbeat", "error", err)
		}
		if time.Since(touched) > time.Minute {
			if err := w.store.TouchHost(ctx, w.opts.Host, w.opts.Version, w.opts.Instance); err == nil {
				touched = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := lease.Renew(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, queue.ErrLeaseLost) {
				w.logger.Error("host lease lost; stopping", "error", err)
				stop(err)
				return
			}
			w.logger.Warn("renew lease", "error", err)
		}
	}
}
