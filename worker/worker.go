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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/recent"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// Store is what the worker needs of PostgreSQL.
type Store interface {
	Claim(ctx context.Context, id uuid.UUID, worker string, seq uint64) (*order.Order, bool, error)
	// ClaimRan claims again an order whose claim PostgreSQL lost after
	// it ran, to record its result (completeLostClaim).
	ClaimRan(ctx context.Context, id uuid.UUID, worker string, seq uint64) (*order.Order, bool, error)
	Complete(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish) error
	CompleteAndClaim(ctx context.Context, id uuid.UUID, attempt int, f postgres.Finish,
		nextID uuid.UUID, worker string, nextSeq uint64) (postgres.Step, error)
	Expire(ctx context.Context, id uuid.UUID, actor string) (bool, error)
	CancelWaiterGone(ctx context.Context, id uuid.UUID, worker string) (bool, string, error)
	// Cancel ends a queued order a restored database holds as never
	// claimed below the host's claim mark (replay.go).
	Cancel(ctx context.Context, id uuid.UUID, actor, reason string) (bool, error)
	InterruptAttempt(ctx context.Context, id uuid.UUID, attempt int, actor, reason string, out *postgres.PartialOutput) (bool, error)
	Requeue(ctx context.Context, id uuid.UUID, attempt int, actor, reason string) (bool, error)
	Unclaim(ctx context.Context, id uuid.UUID, attempt int, worker, why string) (bool, error)
	GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error)
	TouchHost(ctx context.Context, host, version, instance string) error
	// HostOwner names the host's last owner (standby.go).
	HostOwner(ctx context.Context, host string) (postgres.Owner, error)
	// CancelRequestOf is the recorded request a control message must
	// match before a running order is signalled (control.go).
	CancelRequestOf(ctx context.Context, id uuid.UUID) (*postgres.CancelRequest, error)

	// OwnerEpoch and ConfirmOwner are the host's owner as its lease
	// reads and confirms it (owners.go).
	OwnerEpoch(ctx context.Context, host string) (string, int64, error)
	ConfirmOwner(ctx context.Context, host, instance string) (bool, error)

	// The takeover protocol (takeover.go).
	TakeHostFrom(ctx context.Context, host, version string, me postgres.Owner, from string, epoch int64) (postgres.Owner, int64, error)
	RunningOrders(ctx context.Context, host string) ([]*order.Order, error)
	// LastClaimed is where a consumer the server lost is made again.
	LastClaimed(ctx context.Context, host string) (uint64, uuid.UUID, error)
	UnreapedAttempts(ctx context.Context, host string) ([]postgres.Unreaped, error)
	RecordProcess(ctx context.Context, id uuid.UUID, attempt int, worker string, p postgres.Process) error
	TouchProcess(ctx context.Context, id uuid.UUID, attempt int) error
	OwnsAttempt(ctx context.Context, id uuid.UUID, attempt int, worker string) (bool, error)
	JobAfterTakeover(ctx context.Context, c *postgres.JobCheck, id uuid.UUID, attempt int, worker string, detail map[string]any) (bool, error)
	ProcessOf(ctx context.Context, id uuid.UUID, attempt int) (*postgres.Process, error)
	RecordEvidence(ctx context.Context, id uuid.UUID, attempt int, actor string, ev postgres.Evidence) error
	// BlockersOf names who holds up a statement that waits (lockwait.go).
	BlockersOf(ctx context.Context, pid uint32) ([]postgres.Blocker, error)
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
	// SweepEvery is how often an idle worker looks for orders of its host
	// that PostgreSQL holds as running (leftRunning); default a minute.
	SweepEvery time.Duration
	// StallCheckEvery is how often an idle worker that saw trouble on the
	// bus checks its consumer (stall.go); default 2 s. A reconnect has it
	// checked at once.
	StallCheckEvery time.Duration
	// IdleCheckEvery is how often an idle worker on a NATS cluster
	// checks its consumer although it saw no trouble (stall.go); default
	// 4 s. On a single server it checks only after trouble.
	IdleCheckEvery time.Duration
	// TouchEvery is how often the holder of the lease records in
	// PostgreSQL that its host is alive (the hosts listing's last seen
	// once the heartbeat is gone); default a minute.
	TouchEvery time.Duration

	// StatementWaitWarn is how long a statement on the order path (claim,
	// process record, result) may take before the worker warns that it
	// waits and names who blocks it (lockwait.go); zero is
	// statementWaitWarn.
	StatementWaitWarn time.Duration

	// RecordWait is how long the worker gives an order's leader to exit
	// before it commits the order's process record on its own (a leader
	// done by then has its record written with its result); zero is
	// recordWait. Tests lengthen it to make the path certain.
	RecordWait time.Duration

	// NextWait is how long an order's result waits for the next
	// delivery when the stream said, delivering the order, that more of
	// the host's orders follow it: the result then shares its commit with
	// the next claim (nextWait when zero). Tests lengthen it to make the
	// path certain.
	NextWait time.Duration

	// FailPoint, when set, is called at named points of the protocol
	// ("after_claim", "after_exec"); a non-nil error makes the worker stop
	// right there as if it had crashed. Tests use it to inject failures.
	// "after_start" is called once the order's process record is
	// committed or put off to the result, while the order's processes may
	// still run (the executor ends them after it); an error there refuses
	// the process, as a record that could not be written does.
	FailPoint func(point string, o *order.Order) error

	// ClaimMarkKey signs the host's claim mark and lease, and checks the
	// ones NATS holds (queue.MarkKey, queue.AcquireSignedLease): derived
	// from this host's NATS credential, which another host's worker does
	// not hold. Nil (no credential): both are written unsigned and
	// trusted as read.
	ClaimMarkKey queue.MarkKey

	// Metrics records finished orders; nil records nothing.
	Metrics *metrics.Metrics

	// Status, when set, is told in one line what the worker does each
	// time that changes: standing by, consuming, taking the host again.
	// cmd/orderly passes it to systemd (STATUS=, systemctl status).
	Status func(string)
}

// Worker runs the orders of one host.
type Worker struct {
	opts   Options
	store  Store
	q      *queue.Queue
	policy Preparer
	exec   Runner
	logger *slog.Logger

	// alone is the id of the order whose run last ended with nothing in
	// the live stream but a started event that expires (no chunk, a
	// StartedTTL): its finished event says so (Event.Alone). Read and
	// written only by the goroutine that handles orders, one at a time.
	alone uuid.UUID
	// unsettled is the order whose result committed with the next
	// order's claim and whose finished event and ack wait for that next
	// order's start (settle.go); settleHook is settleUnsettled as the
	// executor's Started, made once. Both only of the goroutine that
	// handles orders.
	unsettled  unsettled
	settleHook func()
	// writes is the write context the orders' writes share while the
	// worker is not stopping (writeContext), made for the context of
	// and by the goroutine that handles orders, which alone uses it.
	writes struct{ of, ctx context.Context }

	mu        sync.Mutex
	current   *running  // the order being executed, for cancel requests
	earlyWake uuid.UUID // a cancel wake-up for an order not yet current

	// started: the orders this instance started executing, so that one
	// it claimed and then lost track of (the claim committed, its answer
	// lost) is told from one it ran: the first is still to execute, the
	// second must never run again. Older ones cannot be redelivered to an
	// instance still running.
	started recent.IDs
	self    postgres.Owner // this process, recorded as the host's owner
	// unreaped holds the attempts abandon marked, or may have marked,
	// and has not reaped yet; only the goroutine that runs the tenures
	// (takeover, the consume loop) uses it.
	unreaped map[uuid.UUID]abandoned
	// acks confirms the current tenure's acks; one the server did not
	// confirm marks the tenure's stall check suspect (ack.go).
	acks atomic.Pointer[acks]
	// acked is how far the server confirmed the acks (acked.go).
	acked ackedTo
	// wakes coalesces control wake-ups (control.go).
	wakes wakes
	// claims is how far the host's orders were claimed (replay.go).
	claims claimMarks
	// hold is the current tenure's hold on the lease (hold.go); only the
	// goroutine that runs the tenures sets it.
	hold *hold
	// pg is whether the worker reaches PostgreSQL, for its heartbeat
	// (pgreach.go).
	pg pgReach
	// waits watches the order path's store calls in flight for one
	// that waits long (lockwait.go).
	waits stmtWaits
}

type running struct {
	id      uuid.UUID
	signals chan syscall.Signal
	applied time.Time // the cancel request already signalled, by its time
	actor   string    // who made that request
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
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = time.Minute
	}
	if opts.StatementWaitWarn <= 0 {
		opts.StatementWaitWarn = statementWaitWarn
	}
	if opts.RecordWait <= 0 {
		opts.RecordWait = recordWait
	}
	if opts.NextWait <= 0 {
		opts.NextWait = nextWait
	}
	if opts.StallCheckEvery <= 0 {
		opts.StallCheckEvery = stallCheckEvery
	}
	if opts.IdleCheckEvery <= 0 {
		opts.IdleCheckEvery = idleCheckEvery
	}
	if opts.TouchEvery <= 0 {
		opts.TouchEvery = time.Minute
	}
	w := &Worker{opts: opts, store: store, q: q, policy: policy, exec: exec,
		logger: logger.With("host", opts.Host, "instance", opts.Instance)}
	w.claims.moved = make(chan struct{}, 1)
	// Without its identity (no /proc) the owner record just names the
	// instance; nothing depends on the rest but the evidence. Said once
	// here: a /proc of another pid namespace fails every order's start.
	me, err := executor.Self()
	if err != nil {
		w.logger.Warn("identify this worker's process", "error", err)
	}
	w.self = postgres.Owner{Instance: opts.Instance, PID: me.PID, Start: me.StartTime, Boot: me.BootID, PidNS: me.PidNS}
	opts.Metrics.WorkerHost(opts.Host)
	return w
}

// status reports what the worker does now to Options.Status.
func (w *Worker) status(s string) {
	if w.opts.Status != nil {
		w.opts.Status(s)
	}
}

// errCrash marks a stop injected by a fail-point.
var errCrash = errors.New("fail-point")

// errRewind ends a tenure whose consumer cannot be trusted: its delivery
// sequence has a gap (some delivery went to another client, a worker that
// was frozen and has not yet noticed it lost the host; nothing after the
// gap may run before what was taken), or it counts messages as held by
// this idle worker (acks lost, stall.go). The next tenure rewinds the
// consumer, which hands every unacknowledged message back in stream order.
var errRewind = errors.New("rewinding the host's consumer (a delivery gap or lost acks)")

// errNotPast ends a tenure whose consumer, made again past the message
// its worker acked last (queue.HostConsumerPast), delivered another
// first: the stream was made again (its sequences start over) or that
// message was purged, and nothing tells what it holds below. Nothing of it
// is handed over; the next tenure's consumer starts at the first message
// stored.
var errNotPast = errors.New("the host's consumer made again past the orders acked did not deliver the last one first; delivering from the first message stored")

// notPast forgets the message acked last, and deletes the consumer made
// past it, so that no worker takes the host over on it (errNotPast).
func (w *Worker) notPast(ctx context.Context, past queue.Acked, meta *jetstream.MsgMetadata) {
	w.acked.missed()
	// INFO: where the API purges acknowledged orders, the one acked last
	// is usually gone by the next restart.
	w.logger.Info("the consumer made again past the orders acked delivered another message first (the order acked last purged, or the orders stream made again); taking the host again with every message stored",
		"acked_seq", past.Seq, "got_seq", meta.Sequence.Stream)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := w.q.DeleteHostConsumer(dctx, w.opts.Host); err != nil {
		w.logger.Debug("delete the consumer made past the orders acked", "error", err)
	}
}

// Run owns the host for as long as ctx lasts: it takes the host's lease
// (waiting as a standby while another worker holds it), takes the host over
// and consumes its orders. When it loses the host (another worker took the
// lease, the fence refused a claim, NATS or PostgreSQL stayed away too long,
// a gap in deliveries) it goes back to waiting for the lease and takes the
// host over again: it never sits idle holding nothing. On cancellation it
// stops fetching, lets the current order finish for up to ShutdownGrace,
// then kills it.
func (w *Worker) Run(ctx context.Context) error {
	defer w.waits.stop()
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	for {
		started := time.Now()
		var end tenureEnd
		err := w.tenure(ctx, &end)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCrash) {
			return err
		}
		// The wait starts over after a tenure that proved NATS and
		// PostgreSQL sound (tenureEnd.proved), not only after one of a
		// minute: each nats-server restart ends the tenure (the host's
		// consumer is lost), and restarts a few seconds apart doubled
		// the wait to 2 s, each restart costing the orders that much
		// more (docs/decisions.md, hB23). A tenure that ends before its
		// first renewal, as against a server that drops every
		// connection at once, doubles it as before: a tenure that
		// resets it lasted a renewal interval, so at most one takeover
		// per renewal interval, and one per 2 s otherwise.
		if end.proved || time.Since(started) > time.Minute {
			b.reset()
		}
		// A standby, or a takeover, that NATS or PostgreSQL failed never
		// consumed anything: saying it stopped consuming made a standby
		// look like a second worker serving the host.
		if end.consumed {
			w.logger.Warn("stopped consuming the host's orders; taking the host again", "error", err, "retry_in", b.upcoming())
			w.status(fmt.Sprintf("taking host %s again: %v", w.opts.Host, err))
		} else {
			w.logger.Warn("could not take the host; trying again", "error", err, "retry_in", b.upcoming())
			w.status(fmt.Sprintf("could not take host %s; trying again: %v", w.opts.Host, err))
		}
		if err := b.wait(ctx); err != nil {
			return nil
		}
	}
}

// tenureEnd is what Run learns of a tenure besides why it ended.
type tenureEnd struct {
	// consumed: the tenure took the host over and consumed its orders.
	consumed bool
	// proved: the server took a renewal of the lease sent after the
	// consumption began: NATS answered the takeover's requests and a
	// renewal interval later, PostgreSQL the takeover's statements.
	proved bool
}

// tenure is one period of ownership: lease, takeover, consumption. It
// returns why it ended, and fills in end as it goes.
func (w *Worker) tenure(ctx context.Context, end *tenureEnd) error {
	lease, err := w.acquireLease(ctx)
	if err != nil {
		return err
	}
	took := false // the takeover is done
	defer func() {
		// The claims of this tenure, before a successor may take the
		// host: a nats-server restarted after this loses the consumer,
		// not the mark (replay.go).
		w.writeClaimMark(context.WithoutCancel(ctx))
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		// A takeover that failed leaves the host to whoever takes it
		// next: not online in this worker's name meanwhile.
		if ctx.Err() != nil || !took {
			if err := lease.Offline(rctx); err != nil {
				w.logger.Debug("remove heartbeat", "error", err)
			}
		}
		if ctx.Err() != nil {
			// With the heartbeat gone, the hosts listing shows when
			// PostgreSQL last saw the host: make that the stop, not up
			// to a minute before it. Before the release (a successor
			// then writes its own version), and briefly: a PostgreSQL
			// that does not answer must not keep the lease from it.
			tctx, tcancel := context.WithTimeout(rctx, 500*time.Millisecond)
			if err := w.store.TouchHost(tctx, w.opts.Host, w.opts.Version, w.opts.Instance); err != nil {
				w.logger.Debug("record the stop", "error", err)
			}
			tcancel()
		}
		if err := lease.Release(rctx); err != nil {
			w.logger.Debug("release lease", "error", err)
		}
	}()
	// feedCtx ends consumption; ctx ends the worker. Losing the host stops
	// the feed but lets the current order run on: a successor on this
	// machine kills its processes before running anything itself.
	feedCtx, stopFeed := context.WithCancelCause(ctx)
	h := newHold(feedCtx, w.logger, lease.Written(), w.q.LeaseTTL())
	w.hold = h
	// The lease and the heartbeat outlive a shutdown request: the order
	// still running for its shutdown grace is this worker's, and a standby
	// must not take the host (and kill the order) before it is done.
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var consuming time.Time // when consumption began
	defer func() {
		stopFeed(nil)
		stopBeat()
		wg.Wait()
		// The renewing goroutine is done: Written is safe to read.
		end.proved = end.consumed && lease.Written().After(consuming)
	}()
	// Beating from the lease on, not from the end of the takeover: the
	// host showed offline, with no standby either, for as long as the
	// takeover took (settling what the previous owner left, proving its
	// processes gone), and a takeover longer than the lease lost the
	// lease to the next standby.
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.beat(beatCtx, lease, h, stopFeed)
	}()
	cons, past, err := w.takeover(ctx, lease)
	if err != nil {
		return err
	}
	took = true
	// The takeover's statements reached PostgreSQL: an outage recorded
	// in an earlier tenure is over, and an idle worker has no other
	// statement to say so until its touch, up to a minute on.
	w.pgReached()
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.keepClaimMark(feedCtx)
	}()
	ctl, err := w.q.SubscribeControl(w.opts.Host, w.control)
	if err != nil {
		return err
	}
	defer ctl.Unsubscribe()

	// Suspect from the start: a pull request that was not this tenure's
	// may have taken the only message there was, which leaves no gap to
	// see; the first idle check asks the consumer.
	st := newStall(w.opts.StallCheckEvery)
	if w.q.JetStream().Conn().ConnectedClusterName() != "" {
		// A pull request this worker never made may take its next
		// order without a sign to it (stall.go): look now and then.
		st.recheck = w.opts.IdleCheckEvery
	}
	confirms, err := newAcks(w.q.JetStream().Conn(), st, w.logger.Warn, w.acked.raise)
	if err != nil {
		return fmt.Errorf("subscribe to the confirmations of acks: %w", err)
	}
	defer confirms.end()
	w.acks.Store(confirms)

	// Pull requests that expire every 5 s (so heartbeats every 2.5 s, a
	// lost pull noticed within 5 s), not the default 30 s: on a NATS
	// cluster a consumer whose leader died forgets the pending pull, and
	// the host then waited up to 30 s for the client to pull again
	// (TestFaultsNATSCluster).
	iter, err := cons.Messages(jetstream.PullExpiry(queue.HostPullExpiry))
	if err != nil {
		return fmt.Errorf("consume orders of host %s: %w", w.opts.Host, err)
	}
	nc := w.q.JetStream().Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer nc.RemoveStatusListener(reconnected)
		st.watch(feedCtx, cons, reconnected, stopFeed, w.logger.Warn)
	}()
	// The feeder hands messages over one at a time; holding the next one
	// while an order runs is what lets its claim share the result's commit.
	msgs := make(chan *delivery)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(msgs)
		w.feed(feedCtx, iter, msgs, stopFeed, st, past)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-feedCtx.Done()
		// Gone before the next tenure rewinds in place: a pull request
		// of this iterator would take the first delivery. On a cluster
		// the rewind also waits its last pull request out, which a
		// consumer led by another server may not see is dead.
		w.q.StopHostIterator(iter)
	}()
	w.logger.Info("worker consuming", "consumer", queue.ConsumerName(w.opts.Host))
	consuming, end.consumed = time.Now(), true
	w.status("consuming the orders of host " + w.opts.Host)
	sweep := time.NewTicker(w.opts.SweepEvery)
	defer sweep.Stop()
	for {
		st.loopIdle.Store(true)
		if st.suspect.Load() {
			st.poke() // idle now: check the consumer at once
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			if err := w.leftRunning(ctx); err != nil && ctx.Err() == nil {
				w.logger.Warn("look for orders left running", "error", err)
			}
		case msg, ok := <-msgs:
			st.loopIdle.Store(false)
			if ctx.Err() != nil {
				return nil // stopping: left unacked for the next worker
			}
			if !ok {
				// Unacked held messages are redelivered, in order, to
				// whoever takes the host next (this worker included).
				return context.Cause(feedCtx)
			}
			if err := w.handle(ctx, msg, msgs); err != nil {
				// A message that could not be settled must not be
				// overtaken by the next one: end the tenure.
				return err
			}
		}
	}
}

// feed passes the consumer's messages on in delivery order, each read
// once (newDelivery), checking that the consumer's delivery sequence has
// no gap (see errRewind), and, on a consumer made again past the message
// acked last (past, not zero), that the first delivery is that very
// message (errNotPast).
func (w *Worker) feed(ctx context.Context, iter jetstream.MessagesContext, msgs chan<- *delivery, stop context.CancelCauseFunc, st *stall, past queue.Acked) {
	var last uint64
	b := backoff{min: 10 * time.Millisecond, max: time.Second}
	for {
		st.feederIdle.Store(true)
		msg, err := iter.Next()
		if err == nil {
			st.feederIdle.Store(false)
		}
		if err != nil {
			st.suspectNow()
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
				errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, nats.ErrConnectionClosed) {
				stop(fmt.Errorf("consume orders: %w", err))
				return
			}
			w.logger.Warn("fetch order", "error", err)
			if b.wait(ctx) != nil {
				return
			}
			continue
		}
		b.reset()
		d := newDelivery(msg)
		if meta := d.meta; meta != nil {
			// A sequence at or below the last one is the server delivering
			// again what it already sent (after a reconnect): a duplicate,
			// which processing recognizes. Only a jump forward means some
			// delivery went elsewhere; the takeover numbers deliveries from
			// 1, so a first delivery above 1 is a jump too (a pull request
			// left by a previous owner, or by this worker's previous
			// tenure, took the first).
			if meta.Sequence.Consumer > last+1 {
				w.logger.Warn("gap in deliveries; rewinding", "after", last, "got", meta.Sequence.Consumer,
					"stream_seq", meta.Sequence.Stream)
				stop(errRewind)
				return
			}
			if past.Seq != 0 {
				if !past.Is(meta.Sequence.Stream, meta.Timestamp, d.id) {
					w.notPast(ctx, past, meta)
					stop(errNotPast)
					return
				}
				past = queue.Acked{}
			}
			last = max(last, meta.Sequence.Consumer)
		}
		select {
		case msgs <- d:
		case <-ctx.Done():
			return // unacked: redelivered to whoever holds the host next
		}
	}
}

// beat renews the lease and has the heartbeat published beside it
// (heartbeats); losing the lease ends the tenure, since another worker now
// owns the host. What it finds of a lapse goes to h at once, so that no
// claim or start follows the finding (hold.go); a lease it takes again
// lets them go on.
func (w *Worker) beat(ctx context.Context, lease *queue.Lease, h *hold, stop context.CancelCauseFunc) {
	lease.OnLapse(func() { h.set(leaseLapsed) })
	every := w.opts.Heartbeat
	t := time.NewTicker(every)
	defer t.Stop()
	// The bucket's TTL is read again at each tenure, every minute and
	// after a lapse: an API restarted with a shorter nats.lease_ttl
	// shortens every lease at once, and a worker renewing at its start's
	// pace lost the host between two renewals, to a standby woken at the
	// expiry, again and again until it was restarted.
	//
	// The read runs beside the renewals, one at a time, and its answer is
	// fitted in the loop (fitted): a read held up (its request's bound,
	// 5 s: a JetStream API slow to give the stream's info) held up the
	// renewals, and lapsed a lease of 2 s under its live holder, which
	// took it again and read again, a lapse a read
	// (TestAHeldBucketTTLReadDoesNotLapseTheLease).
	var (
		reads   sync.WaitGroup
		reading atomic.Bool
		read    atomic.Int64 // the last TTL read, for fitted
		fitted  = make(chan struct{}, 1)
	)
	defer reads.Wait()
	readTTL := func() {
		if !reading.CompareAndSwap(false, true) {
			return
		}
		reads.Add(1)
		go func() {
			defer reads.Done()
			defer reading.Store(false)
			ttl, err := w.q.BucketTTL(ctx)
			if err != nil {
				if ctx.Err() == nil {
					w.logger.Debug("read the host lease's TTL", "error", err)
				}
				return
			}
			read.Store(int64(ttl))
			select {
			case fitted <- struct{}{}:
			default: // the one not yet fitted fits this read
			}
		}()
	}
	fit := func(ttl time.Duration) {
		if ttl > 0 {
			h.ttl.Store(int64(ttl))
		}
		lease.SetTTL(ttl)
		next := queue.RenewEvery(w.opts.Heartbeat, ttl)
		if next == every {
			return
		}
		every = next
		t.Reset(every)
		if every < w.opts.Heartbeat {
			w.logger.Error("nats.heartbeat does not fit the host lease: renewing it every third of the lease instead; "+
				"set nats.heartbeat to at most a third of the API's nats.lease_ttl and restart the worker",
				"heartbeat", w.opts.Heartbeat, "lease", ttl, "renew_every", every, "bucket", queue.HostsBucket)
		} else {
			w.logger.Info("nats.heartbeat fits the host lease again", "heartbeat", w.opts.Heartbeat, "lease", ttl)
		}
	}
	readTTL()
	checked := time.Now()
	// The touch of the hosts table runs beside the renewals, one at a
	// time: a PostgreSQL that does not answer (a link cut without a
	// word, a frozen server) held them up, so a worker cut off from
	// PostgreSQL alone lost its lease a minute into the cut, and a
	// standby took the host and interrupted the order it ran, for an
	// outage the standby shares.
	var (
		touches  sync.WaitGroup
		touching atomic.Bool
		touched  atomic.Int64 // when PostgreSQL last took a touch, in Unix nanoseconds
	)
	defer touches.Wait()
	touched.Store(time.Now().UnixNano())
	// The heartbeat is written beside the renewals, not before each: a
	// renewal that waited for the heartbeat's write had two round trips
	// and the tick to fit in the lease, and a heartbeat held up (its
	// request's whole bound, 5 s) lapsed a lease of 2 s under a live
	// holder, whose standby took the host (TestFaultsFleet under load,
	// TestHeldHeartbeatsDoNotLapseTheLease). Each tick asks for one
	// (beats, one waiting at most); a heartbeat that finds the lease in
	// doubt asks for a renewal at once (doubts), not a tick later, and
	// claims wait for its verdict meanwhile.
	bctx, stopBeats := context.WithCancel(ctx)
	beats, doubts := make(chan struct{}, 1), make(chan struct{}, 1)
	var beating sync.WaitGroup
	defer func() {
		stopBeats()
		beating.Wait()
	}()
	beating.Add(1)
	go func() {
		defer beating.Done()
		w.heartbeats(bctx, lease, h, beats, doubts)
	}()
	for {
		if time.Since(time.Unix(0, touched.Load())) > w.opts.TouchEvery && touching.CompareAndSwap(false, true) {
			touches.Add(1)
			go func() {
				defer touches.Done()
				defer touching.Store(false)
				if err := w.store.TouchHost(ctx, w.opts.Host, w.opts.Version, w.opts.Instance); err == nil {
					touched.Store(time.Now().UnixNano())
					w.pgReached()
				} else if ctx.Err() == nil {
					// An idle worker's only statement: without it a
					// worker cut off from PostgreSQL with nothing to
					// run showed as healthy until an order came.
					if unreachable(err) {
						w.pgFailed("record that the host is alive", err)
					} else {
						w.logger.Debug("record that the host is alive", "error", err)
					}
				}
			}()
		}
		if time.Since(checked) > time.Minute {
			readTTL()
			checked = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-fitted:
			fit(time.Duration(read.Load()))
			continue
		case <-t.C:
			select {
			case beats <- struct{}{}:
			default: // the last one asked for is not written yet
			}
		case <-doubts:
		}
		// A doubt found before this renewal is sent is answered by its
		// verdict: one renewal for it, not two.
		select {
		case <-doubts:
		default:
		}
		doubted := h.doubted()
		retaken, err := lease.Renew(ctx)
		if err == nil {
			h.renewal(lease.Written())
			h.settled(doubted)
		}
		if retaken {
			w.logger.Warn("host lease had lapsed (a pause or a partition longer than nats.lease_ttl); nobody took it, taken again")
			readTTL()
		}
		if err != nil && ctx.Err() == nil {
			if errors.Is(err, queue.ErrLeaseLost) {
				h.lose(err)
				w.logger.Error("host lease lost; stopping consumption", "error", err)
				stop(err)
				return
			}
			w.opts.Metrics.LeaseFailed(w.opts.Host, metrics.LeaseRenew)
			w.logger.Warn("renew lease", "error", err)
		}
	}
}
