// Package intake is the one path every new order takes, whether it came
// over REST or NATS: validate, authorize, record in PostgreSQL, then publish
// to JetStream (DESIGN §2.1). It also owns the periodic jobs around it: the
// reconciler that republishes orders whose publish was lost, retention, and
// the expiry of queued orders whose deadline passed.
package intake

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/logging"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
)

// Store is what intake needs of PostgreSQL.
type Store interface {
	InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error)
	RecordedRequest(ctx context.Context, o *order.Order) (*order.Order, error)
	MarkPublished(ctx context.Context, ids []uuid.UUID) error
	ForgetStarted(ctx context.Context) (int64, error)
	Unpublished(ctx context.Context, age time.Duration, limit int) ([]*order.Order, error)
	RecordRejection(ctx context.Context, r postgres.Rejection) error
	RecordRejectionID(ctx context.Context, r postgres.Rejection) (int64, error)
	DeleteRejection(ctx context.Context, id int64) error
	DeleteSubmissionRejections(ctx context.Context, submission uuid.UUID, since time.Time) (int64, error)
	DeleteFinishedBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteRejectionsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteOrphanDelegationsBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	DeleteMaintenanceLogBefore(ctx context.Context, t time.Time, limit int) (int64, error)
	ExpireDue(ctx context.Context, limit int) ([]postgres.Expired, error)
	QueuedPublishedOlderThan(ctx context.Context, age time.Duration, perHost int) ([]postgres.QueuedOrder, error)
	Cancel(ctx context.Context, id uuid.UUID, actor, reason string) (bool, error)
	Ended(ctx context.Context, ids []uuid.UUID) (ended map[uuid.UUID]bool, unrecorded []uuid.UUID, err error)
	LiveOutputKept(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]bool, error)
	ActiveCounts(ctx context.Context, hosts []string) (map[string]int, error)
	PublishGeneration(ctx context.Context) (uint64, error)
	HoldsNoOrders(ctx context.Context) (bool, error)
	RaisePublishGeneration(ctx context.Context, past uint64) (uint64, error)
	StillUnpublished(ctx context.Context, ids []uuid.UUID) ([]uuid.UUID, error)
	HostsInMaintenance(ctx context.Context) (map[string]postgres.Maintenance, error)
}

// Publisher puts an order on its host's subject, and tells waiters (?wait,
// SSE, logs -f) about orders intake finished itself.
type Publisher interface {
	Publish(ctx context.Context, host string, id uuid.UUID) (uint64, error)
	PublishEvent(ev queue.Event) error
	Missing(ctx context.Context, host string, want []uuid.UUID, scan int) ([]uuid.UUID, error)
	UnservedHosts(ctx context.Context) (map[string]uint64, error)
	DropEnded(ctx context.Context, host string, scan int, ended func(context.Context, []uuid.UUID) (map[uuid.UUID]bool, error)) (int, error)
	PurgeAcked(ctx context.Context) (int, error)
	ApplyDeferredSettings(ctx context.Context) (int, error)
	ProbeStoring(ctx context.Context) (int, error)
	Mend(ctx context.Context) (int, error)
	PostgresMark(ctx context.Context) (uint64, error)
	RaisePostgresMark(ctx context.Context, gen uint64) error
	LiveFreer
}

// Authorizer is the API policy.
type Authorizer interface {
	Decide(r policy.Request) (order.Decision, error)
}

// Options tune the service.
type Options struct {
	Limits         func() order.Limits  // read per order, so a reload applies at once
	ReconcileEvery time.Duration        // how often to look for unpublished orders
	ReconcileAfter time.Duration        // how old an unpublished order must be
	ExpireEvery    time.Duration        // how often to expire queued orders past their deadline
	LostAfter      time.Duration        // how old a queued order must be for EndLost to look for its message
	LostEvery      time.Duration        // how often EndLost runs
	DropEvery      time.Duration        // how often DropEnded runs
	PurgeEvery     time.Duration        // how often acknowledged orders leave a limits orders stream (queue.PurgeAcked)
	LiveSweepEvery time.Duration        // how often FreeLiveLeftovers runs (0: LiveSweepEvery), first after a sixth of it
	MarkEvery      time.Duration        // how long a publish mark waits for others to share its DELETE (0: 50 ms)
	Retention      func() time.Duration // finished orders older than this are deleted; 0 keeps all
	// Screen, when set, refuses up front what the workers would refuse
	// (env names, forbidden characters), from the API's own config.
	Screen func(*order.Order) error
	// Metrics counts submissions and refusals; nil records nothing.
	Metrics *metrics.Metrics
	// Actions authorizes orders of kind action (internal/action); read
	// per order, so a reload applies at once. Nil refuses them.
	Actions func() ActionAuthorizer
}

// ActionAuthorizer decides an action order from the action's definition
// and completes it (command, params, run_as, timeout, run limit).
type ActionAuthorizer interface {
	Authorize(p auth.Principal, o *order.Order) (order.Decision, error)
}

func (s *Service) authorizeAction(p auth.Principal, o *order.Order) (order.Decision, error) {
	var a ActionAuthorizer
	if s.opts.Actions != nil {
		a = s.opts.Actions()
	}
	if a == nil {
		return order.Decision{Decision: "deny", Matched: []string{}}, order.Errorf(order.CodeNotFound, "actions are not configured")
	}
	return a.Authorize(p, o)
}

// Service submits orders.
type Service struct {
	store  Store
	pub    Publisher
	policy func() Authorizer
	opts   Options
	logger *slog.Logger

	published   marks
	restore     restoreGuard     // restore.go
	maintenance maintenanceCache // maintenance.go
}

// New returns a Service. policy is called per order so that a config reload
// swaps the rules without a restart.
func New(store Store, pub Publisher, policy func() Authorizer, opts Options, logger *slog.Logger) *Service {
	if opts.ReconcileEvery <= 0 {
		opts.ReconcileEvery = 5 * time.Second
	}
	if opts.ReconcileAfter <= 0 {
		opts.ReconcileAfter = 10 * time.Second
	}
	if opts.LostAfter <= 0 {
		opts.LostAfter = time.Minute
	}
	if opts.LostEvery <= 0 {
		opts.LostEvery = time.Minute
	}
	if opts.DropEvery <= 0 {
		opts.DropEvery = time.Minute
	}
	if opts.ExpireEvery <= 0 {
		opts.ExpireEvery = time.Second
	}
	if opts.PurgeEvery <= 0 {
		opts.PurgeEvery = DefaultPurgeEvery
	}
	if opts.Limits == nil {
		opts.Limits = order.DefaultLimits
	}
	return &Service{store: store, pub: pub, policy: policy, opts: opts, logger: logger,
		published:   marks{every: opts.MarkEvery},
		maintenance: maintenanceCache{first: make(chan struct{}, 1)}}
}

// ErrNotPublished is returned when an order was recorded but could not be
// published; the reconciler will publish it.
type ErrNotPublished struct {
	ID   uuid.UUID
	Host string
	Err  error
}

func (e *ErrNotPublished) Error() string {
	return fmt.Sprintf("order %s recorded but not yet queued: %v", e.ID, e.Err)
}

// Screen refuses what Submit would refuse o for up front: an environment
// name or a character the workers refuse (nil when nothing is configured).
func (s *Service) Screen(o *order.Order) error {
	if s == nil || s.opts.Screen == nil {
		return nil
	}
	return s.opts.Screen(o)
}

// Submit validates, authorizes, records and publishes one order. o.ID may
// be preset (so a caller can subscribe to its events first). It returns the
// stored order: for a repeated idempotency key, the earlier one.
func (s *Service) Submit(ctx context.Context, p auth.Principal, o *order.Order) (*order.Order, error) {
	return s.submit(ctx, p, o, nil)
}

// SubmitAwaited is Submit for a caller that waits for the order it sends
// (?wait): the publish mark of the order it publishes is the caller's to
// settle (Mark.Settle) as its wait reads the order, instead of being held
// at once for the next batch's DELETE. A synchronous order is
// claimed within milliseconds, and the claim deletes its mark: held, it
// armed the batch's timer for every order (a wake-up of the runtime's
// poller), and an order that outlived the batch's wait sent a DELETE that
// deleted nothing (docs/benchmarks.md, the thirty-sixth round). The Mark
// is the zero Mark when the order was not published here (refused, a
// keyed retry of an earlier order, a failed publish). A value, not a
// pointer: one allocation fewer per synchronous order.
func (s *Service) SubmitAwaited(ctx context.Context, p auth.Principal, o *order.Order) (*order.Order, Mark, error) {
	m := Mark{s: s}
	stored, err := s.submit(ctx, p, o, &m)
	return stored, m, err
}

// submit is Submit; with awaited, the mark of the order it publishes is
// handed to awaited instead of held (SubmitAwaited).
func (s *Service) submit(ctx context.Context, p auth.Principal, o *order.Order, awaited *Mark) (*order.Order, error) {
	if o.ID == uuid.Nil {
		o.ID = order.NewID()
	}
	o.Principal = p.Name
	if o.IdempotencyKey != "" && o.RequestSHA256 == nil {
		// Before anything is filled in from the configuration: a retry
		// after a reload that changed a default is the same request.
		o.RequestSHA256 = o.RequestSum()
	}
	defaulted := o.Timeout == 0
	if err := order.Validate(o, s.opts.Limits()); err != nil {
		return s.refusedUnlessRecorded(ctx, p, o, err)
	}
	if s.opts.Screen != nil && o.Kind != order.KindAction {
		if err := s.opts.Screen(o); err != nil {
			return s.refusedUnlessRecorded(ctx, p, o, err)
		}
	}
	var dec order.Decision
	var err error
	if o.Kind == order.KindAction {
		// An action's own definition authorizes it (roles, principals,
		// hosts, param rules); its run limit is enforced at the insert.
		dec, err = s.authorizeAction(p, o)
	} else {
		dec, err = s.policy().Decide(policy.Request{Principal: p, Host: o.Host, Command: o.Command, Args: o.Args,
			RunAs: o.RunAs, Timeout: o.Timeout, TimeoutDefaulted: defaulted, DryRun: o.DryRun})
	}
	o.Policy = dec
	if err != nil {
		return s.refusedUnlessRecorded(ctx, p, o, err)
	}
	if dec.Timeout > 0 {
		o.Timeout = dec.Timeout
	}
	// After the policy: a principal that may not send the order does not
	// learn of the host's maintenance. From the cache, not a statement
	// (maintenance.go); a keyed retry of an order accepted before the
	// host went into maintenance is answered with that order.
	if m, on, err := s.inMaintenance(ctx, o.Host); err != nil {
		return nil, s.refused(o, err)
	} else if on {
		return s.refusedUnlessRecorded(ctx, p, o, MaintenanceRefusal(m))
	}
	// The insert runs to its end whether or not the client still waits:
	// cut short by a client that left while the statement was out (a
	// closed connection), the order could be committed with the caller
	// told it failed, left unpublished for the reconciler to run later
	// for nobody, and again for the client that sent the request once
	// more (a compat client, whose request has no key). The store bounds
	// its own wait on a dead link (connect and TCP user timeouts), and
	// on a server that holds the statement (postgres.InsertEpoch: one
	// timer for every insert out, not a deadline per insert, which cost
	// ten allocations an order; docs/decisions.md, eighteenth round).
	ctx = context.WithoutCancel(ctx)
	prev, err := s.store.InsertOrder(ctx, o)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		return s.requeue(ctx, prev)
	}
	// Recorded, the order is published now, in its place in the host's
	// queue, whether or not the client still waits for the answer: cut
	// short by a client that left (a ?wait given up, a closed
	// connection), it waited for the reconciler and ran after the host's
	// later orders. Publish bounds its own wait.
	if _, err := s.pub.Publish(ctx, o.Host, o.ID); err != nil {
		s.logger.Warn("order accepted, not yet queued; the reconciler will publish it", "order_id", o.ID, "host", o.Host,
			"principal", o.Principal, "source", o.Source, "error", err)
		s.publishFailed(o.ID)
		// Recorded, it runs once the reconciler publishes it: counted
		// now, or the counter fell short of the orders table by every
		// order whose first publish failed.
		s.opts.Metrics.Submitted(o.Source)
		return o, &ErrNotPublished{ID: o.ID, Host: o.Host, Err: err}
	}
	if awaited != nil {
		awaited.id = o.ID
	} else {
		s.published.add(o.ID)
	}
	s.opts.Metrics.Submitted(o.Source)
	// The line's arguments are built only when it is written: boxed for
	// a logger above info (the bench's serve logs at warn), they were four
	// allocations per order for nothing (docs/benchmarks.md, "Serve's sync
	// order, message by message").
	if s.logger.Enabled(ctx, slog.LevelInfo) {
		s.logger.Info("order accepted", "order_id", o.ID, "host", o.Host, "principal", o.Principal, "source", o.Source)
	}
	return o, nil
}

// Recorded is the order p recorded under o's idempotency key when o asks
// for the same request, published again if it is still queued (requeue),
// for a keyed request that a check now refuses: nil when o has no key,
// the key is unused, or it was used for another request. A retry is the
// request its first try was, and that one was accepted: refused because a
// reload since forbids it (the policy, a limit, an action's definition,
// an If-Match naming the old definition), the client that lost the first
// answer concluded that nothing ran while its order ran. The lookup is
// the principal's own (its name and key), so a request learns only of an
// order it sent itself, and it runs nothing new. Run on refusals only:
// an accepted retry meets its key at the insert.
func (s *Service) Recorded(ctx context.Context, p auth.Principal, o *order.Order) (*order.Order, error) {
	if o.IdempotencyKey == "" {
		return nil, nil
	}
	q := *o
	q.Principal = p.Name
	if q.RequestSHA256 == nil {
		q.RequestSHA256 = q.RequestSum()
	}
	prev, err := s.store.RecordedRequest(ctx, &q)
	if err != nil || prev == nil {
		return nil, err
	}
	return s.requeue(ctx, prev)
}

// refusedUnlessRecorded answers o, refused by a check with err, with the
// order its idempotency key recorded for the same request (Recorded), or
// refuses it. When the lookup fails, the refusal stands: it is what the
// request alone earns, and the client may retry.
func (s *Service) refusedUnlessRecorded(ctx context.Context, p auth.Principal, o *order.Order, err error) (*order.Order, error) {
	if code := order.ErrorCode(err); o.IdempotencyKey != "" && code != order.CodeUnavailable && code != order.CodeInternal {
		prev, rerr := s.Recorded(ctx, p, o)
		if prev != nil {
			s.logger.Info("order retried: answered with the order its idempotency key recorded, which a check now refuses",
				"order_id", prev.ID, "host", prev.Host, "principal", p.Name, "source", o.Source,
				"idempotency_key", o.IdempotencyKey, "code", code, "reason", err.Error())
			return prev, rerr
		}
		if rerr != nil && order.ErrorCode(rerr) != order.CodeIdempotencyReused {
			s.logger.Warn("order refused; its idempotency key could not be looked up", "order_id", o.ID,
				"principal", p.Name, "idempotency_key", o.IdempotencyKey, "error", rerr)
		}
	}
	return nil, s.refused(o, err)
}

// refused logs an order the API refused before recording it, with the id
// it would have had (DESIGN §9: one line per state change), and returns
// err for the caller to answer with. The refusal is also an audit row.
func (s *Service) refused(o *order.Order, err error) error {
	attrs := []any{"order_id", o.ID, "host", o.Host, "principal", o.Principal, "source", o.Source,
		"code", order.ErrorCode(err), "reason", err.Error()}
	if o.IdempotencyKey != "" {
		// What the client knows the submission by (an Idempotency-Key, a
		// NATS Nats-Msg-Id): the order id above is new to it.
		attrs = append(attrs, "idempotency_key", o.IdempotencyKey)
	}
	s.logger.Info("order rejected", attrs...)
	return err
}

// Requeue publishes an order its submission recorded but could not queue
// (ErrNotPublished carries it), for a caller that retries that submission
// in place (the NATS intake): the order was accepted when it was recorded,
// so only its publish is left, and the checks before the insert are not
// run again (a reload since may have revoked its token or changed the
// policy; refused then, it ran anyway, queued by the reconciler behind the
// host's later orders).
func (s *Service) Requeue(ctx context.Context, recorded *order.Order) (*order.Order, error) {
	return s.requeue(ctx, recorded)
}

// requeue publishes again an order found by its idempotency key while it
// is still queued. The submission that recorded it may have stopped between
// the insert and the publish (an API replica killed mid-intake): its retry,
// or the redelivery of its NATS message, must put it in the host's stream
// now, ahead of anything submitted after it, not whenever the reconciler
// finds it. The message id is the order id, so a publish that did land
// within the stream's duplicate window is a deduplicated no-op; one that
// landed earlier leaves a second message behind the first, which the
// worker only acknowledges: it reaches it after the first has claimed the
// order.
func (s *Service) requeue(ctx context.Context, prev *order.Order) (*order.Order, error) {
	if prev.Status != order.StatusQueued {
		return prev, nil
	}
	if _, err := s.pub.Publish(context.WithoutCancel(ctx), prev.Host, prev.ID); err != nil {
		s.publishFailed(prev.ID)
		return prev, &ErrNotPublished{ID: prev.ID, Host: prev.Host, Err: err}
	}
	s.published.add(prev.ID)
	return prev, nil
}

// Run marks published orders in batches and reconciles unpublished ones
// until ctx is canceled.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(14)
	go func() {
		defer wg.Done()
		// At start, and after publish marks were cleared: a database
		// restored from a backup is found before the reconciler publishes
		// again what the backup held as not yet published (restore.go).
		s.every(ctx, 0, RestoreEvery, "compare PostgreSQL with the publish generation kept in NATS", s.guardRestore)
	}()
	go func() { defer wg.Done(); s.markLoop(ctx) }()
	go func() {
		defer wg.Done()
		s.every(ctx, MaintenanceEvery, MaintenanceEvery, "read the hosts in maintenance", s.RefreshMaintenance)
	}()
	go func() {
		defer wg.Done()
		s.every(ctx, s.opts.ReconcileEvery, s.opts.ReconcileEvery, "republish unpublished orders", s.Reconcile)
	}()
	go func() {
		defer wg.Done()
		// Retention runs shortly after start, then hourly. With several API
		// replicas each runs it; the deletes are idempotent.
		s.every(ctx, time.Minute, time.Hour, "delete orders past retention", s.Prune)
	}()
	go func() {
		defer wg.Done()
		s.every(ctx, s.opts.ExpireEvery, s.opts.ExpireEvery, "expire orders past their deadline", s.Expire)
	}()
	go func() {
		defer wg.Done()
		s.every(ctx, s.opts.LostEvery, s.opts.LostEvery, "end queued orders whose messages are gone", s.EndLost)
	}()
	go func() {
		defer wg.Done()
		s.every(ctx, s.opts.DropEvery, s.opts.DropEvery, "drop messages of ended orders no worker took", s.DropEnded)
	}()
	go func() {
		defer wg.Done()
		// Each API replica purges the hosts it published to, and every
		// host at its first round and every few minutes (queue.PurgeAcked);
		// a purge up to an ack floor already purged removes nothing.
		s.every(ctx, s.opts.PurgeEvery, s.opts.PurgeEvery, "purge acknowledged orders from the orders stream", s.purgeAcked)
	}()
	go func() {
		defer wg.Done()
		// Settings JetStream refused at start for want of storage to
		// reserve wait no more for the next start with room.
		s.every(ctx, queue.DeferredEvery, queue.DeferredEvery, "apply the stream settings JetStream refused for want of storage, or turn the hosts bucket's rollups off again",
			s.pub.ApplyDeferredSettings)
	}()
	go func() {
		defer wg.Done()
		// A publish left unanswered keeps /readyz at 503 until one is
		// answered: this one asks again, so a stall that passed clears
		// within a second, not with the next order.
		s.every(ctx, queue.ProbeEvery, queue.ProbeEvery, "ask nats-server again whether it stores", s.pub.ProbeStoring)
	}()
	go func() {
		defer wg.Done()
		// The workers may not make the streams: after a NATS restart that
		// lost the live stream, or an operator's nats stream rm, their
		// chunks (or leases) reach it again only once an API has made it.
		// A read of the reconnect count each second, and a look at the
		// streams every queue.MendEvery.
		s.every(ctx, queue.ProbeEvery, queue.ProbeEvery, "make the streams again after a NATS restart or a change by hand", s.pub.Mend)
	}()
	go func() { defer wg.Done(); s.freeLive(ctx) }()
	go func() {
		defer wg.Done()
		every := cmp.Or(s.opts.LiveSweepEvery, LiveSweepEvery)
		s.every(ctx, every/6, every, "free the live output of ended orders the finished events missed", s.FreeLiveLeftovers)
	}()
	wg.Wait()
	s.finalRaise(ctx)
}

// DefaultPurgeEvery is how often the acknowledged orders of a
// limits-retention orders stream are purged (queue.PurgeAcked): what a host
// consumer lost with a nats-server restart delivers again, only to be
// acknowledged, is at most that long's worth of the host's orders.
const DefaultPurgeEvery = 5 * time.Second

// purgeAcked is queue.PurgeAcked as a periodic job. Its count is of hosts,
// not orders, so it logs none: every few seconds under load is routine.
func (s *Service) purgeAcked(ctx context.Context) (int, error) {
	_, err := s.pub.PurgeAcked(ctx)
	return 0, err
}

// dropScan bounds how many messages of one host DropEnded reads per round.
const dropScan = 1000

// DropEnded removes from the orders stream the messages of orders that
// ended while queued (canceled, expired) on hosts no worker serves: only a
// worker's ack takes a message out of the work queue, so those of a host
// that never had a worker (a typo) or has none any more (a retired
// machine) stayed on disk for good, one per order. Only the run of ended
// orders at the front of a host's queue goes; a queued order's message,
// and everything behind it, stays for the worker that may come. A host
// with a live worker is left to it: it acks them as it reaches them.
func (s *Service) DropEnded(ctx context.Context) (int, error) {
	msgs, err := s.pub.UnservedHosts(ctx)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	hosts := slices.Sorted(maps.Keys(msgs))
	// A host with no more messages than orders that may still run has
	// none to drop: reading its messages one by one every minute would
	// cost a host offline for a day with a long queue (or hundreds of
	// them) for nothing. (An order recorded between the two reads only
	// puts its host off to the next round.)
	active, err := s.store.ActiveCounts(ctx, hosts)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, host := range hosts {
		if msgs[host] <= uint64(active[host]) {
			continue
		}
		d, err := s.pub.DropEnded(ctx, host, dropScan, s.endedOrUnrecorded(host))
		n += d
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// endedOrUnrecorded is DropEnded's question to PostgreSQL for host's
// messages. An order PostgreSQL does not know was accepted after the
// backup a restored database came from: no row will ever say it was lost,
// so each one is logged by id, as a worker logs one it drops.
func (s *Service) endedOrUnrecorded(host string) func(context.Context, []uuid.UUID) (map[uuid.UUID]bool, error) {
	return func(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
		gone, unknown, err := s.store.Ended(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range unknown {
			if id != uuid.Nil {
				s.logger.Error("dropped a message whose order is not in the database", "order_id", id, "host", host,
					"stream", queue.OrdersStream)
			}
		}
		return gone, nil
	}
}

// EndLost looks at the oldest lostPerHost queued orders of each host and
// reads at most lostScan of a host's messages per round; it runs another
// round at once, up to lostRounds in a run, while a round ended a whole
// batch of some host (a purged queue: its next orders are likely gone
// too).
const (
	lostPerHost = 200
	lostScan    = 20000
	lostRounds  = 50
)

// EndLost ends, as canceled, the queued orders whose messages left the
// orders stream without a worker taking them: removed by hand (a purge, a
// deleted stream). No worker would ever get them, so they stayed queued
// for good while later orders of their host ran. They are not published
// again: that would run them after later orders, and a purge is how an
// operator drops a queue. Only orders older than opts.LostAfter are
// looked at, and the cancel only takes an order that is still queued, so
// one taken meanwhile is left alone (its message is acknowledged only
// after its claim).
func (s *Service) EndLost(ctx context.Context) (int, error) {
	total := 0
	for range lostRounds {
		n, again, err := s.endLostRound(ctx)
		total += n
		if err != nil || !again {
			return total, err
		}
	}
	return total, nil
}

// endLostRound is one round of EndLost; again reports whether it ended
// all of a host's lostPerHost oldest queued orders.
func (s *Service) endLostRound(ctx context.Context) (n int, again bool, err error) {
	list, err := s.store.QueuedPublishedOlderThan(ctx, s.opts.LostAfter, lostPerHost)
	if err != nil {
		return 0, false, err
	}
	for i := 0; i < len(list); {
		host := list[i].Host
		var want []uuid.UUID
		principals := map[uuid.UUID]string{}
		for ; i < len(list) && list[i].Host == host; i++ {
			want = append(want, list[i].ID)
			principals[list[i].ID] = list[i].Principal
		}
		missing, err := s.pub.Missing(ctx, host, want, lostScan)
		if err != nil {
			return n, false, err
		}
		ended := 0
		for _, id := range missing {
			ok, err := s.store.Cancel(ctx, id, "orderly", lostReason)
			if err != nil {
				return n, false, err
			}
			if !ok {
				continue
			}
			n++
			ended++
			s.logger.Error("order canceled: its message is gone from the orders stream", "order_id", id, "host", host,
				"principal", principals[id], "actor", "orderly", "stream", queue.OrdersStream)
			s.ended(id, host, order.StatusCanceled)
		}
		again = again || ended == lostPerHost
	}
	return n, again, nil
}

// ended counts a queued order that intake ended (expired, or lost from
// the stream) and publishes its finished event, so that waiting clients
// return. Waiters also poll PostgreSQL; the event only makes them quick.
func (s *Service) ended(id uuid.UUID, host string, st order.Status) {
	s.opts.Metrics.Finished(host, st, -1)
	if err := s.pub.PublishEvent(queue.Event{OrderID: id, Type: "finished", Status: string(st), Host: host}); err != nil {
		s.logger.Warn("publish finished event", "order_id", id, "host", host, "status", st, "error", err)
	}
}

// lostReason is the error of an order EndLost ends.
// After a PostgreSQL restore the order may have run after the backup was
// taken: the reason must not tell an operator it never did.
const lostReason = "its message is gone from the " + queue.OrdersStream + " stream (purged or deleted by hand, the NATS store lost, " +
	"or PostgreSQL restored from a backup taken before a worker ran it): no worker will run it"

func (s *Service) markLoop(ctx context.Context) {
	s.published.run(ctx, func(batch []uuid.UUID) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := s.store.MarkPublished(fctx, batch)
		// Also after an error: the DELETE may have committed all the
		// same (its answer lost), and a raise too many costs nothing.
		s.cleared()
		if err != nil {
			s.logger.Warn("mark orders published", "count", len(batch), "error", err)
		}
	})
}

// every runs job after first, then every period, until ctx ends, logging
// what it did (done is the count of orders it handled). A job that keeps
// failing logs its first failure, then one a minute with how many there
// were, then its recovery: a once-a-second job must not write 3,600
// lines an hour while a dependency is down.
func (s *Service) every(ctx context.Context, first, period time.Duration, what string, job func(context.Context) (int, error)) {
	t := time.NewTimer(first)
	defer t.Stop()
	var failing logging.Streak
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := job(ctx)
		if err != nil {
			if f, log := failing.Fail(); log && ctx.Err() == nil {
				s.logger.Warn(what, "error", err, "failures", f)
			}
		} else if f := failing.End(); f > 0 {
			s.logger.Info(what+": working again", "failures", f, "count", n)
		} else if n > 0 {
			s.logger.Info(what, "count", n)
		}
		t.Reset(period)
	}
}

// Reconcile republishes queued orders that never reached JetStream. The
// message id is the order id, so a publish that did land within the
// stream's duplicate window is deduplicated. One that landed earlier is
// not, and after a restore of PostgreSQL an order the backup holds as
// unpublished may have run since: before it publishes anything, it
// compares PostgreSQL with the publish generation kept in NATS, and a
// restore found settles those orders instead (restore.go).
func (s *Service) Reconcile(ctx context.Context) (int, error) {
	if err := s.forgetStarted(ctx); err != nil {
		return 0, err
	}
	list, err := s.store.Unpublished(ctx, s.opts.ReconcileAfter, 500)
	if err != nil || len(list) == 0 {
		return 0, err
	}
	if _, err := s.checkRestore(ctx, false); err != nil {
		return 0, err
	}
	if list, err = s.store.Unpublished(ctx, s.opts.ReconcileAfter, 500); err != nil {
		return 0, err
	}
	var done []uuid.UUID
	for _, o := range list {
		if _, err := s.pub.Publish(ctx, o.Host, o.ID); err != nil {
			break
		}
		done = append(done, o.ID)
	}
	if len(done) > 0 {
		err := s.store.MarkPublished(ctx, done)
		s.cleared() // after an error too, as markLoop
		if err != nil {
			return len(done), err
		}
	}
	return len(done), nil
}

// Expire ends the queued orders whose deadline passed, whether or not a
// worker serves their host (a host with none would keep them queued
// forever), and publishes each one's finished event so waiting clients
// return. A worker that gets the message later finds the order expired and
// only acknowledges it.
func (s *Service) Expire(ctx context.Context) (int, error) {
	const batch = 500
	total := 0
	for {
		list, err := s.store.ExpireDue(ctx, batch)
		for _, e := range list {
			s.logger.Info("order expired", "order_id", e.ID, "host", e.Host, "principal", e.Principal)
			s.ended(e.ID, e.Host, order.StatusExpired)
		}
		total += len(list)
		if err != nil || len(list) < batch {
			return total, err
		}
	}
}

// Reject records a refused submission for the audit trail.
func (s *Service) Reject(ctx context.Context, r postgres.Rejection) {
	s.opts.Metrics.Rejected(order.Code(r.Code))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.store.RecordRejection(rctx, r); err != nil {
		s.logger.Error("record rejection", "code", r.Code, "error", err)
	}
}

// RejectTentatively records r as Reject does, for a refusal that may not
// be given after all: settle(true) counts it, settle(false) deletes its
// row again. The NATS intake records a refusal before it answers, and
// does not answer when its replica lost the intake meanwhile: the replica
// pinned next takes the submission up again and may accept it, and the
// row left behind said it was refused.
func (s *Service) RejectTentatively(ctx context.Context, r postgres.Rejection) (settle func(give bool)) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	id, err := s.store.RecordRejectionID(rctx, r)
	if err != nil {
		s.logger.Error("record rejection", "code", r.Code, "error", err)
	}
	return func(give bool) {
		if give {
			s.opts.Metrics.Rejected(order.Code(r.Code))
			return
		}
		if err != nil {
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := s.store.DeleteRejection(dctx, id); err != nil {
			s.logger.Error("delete a rejection not given", "code", r.Code, "id", id, "error", err)
		}
	}
}

// submissionClockSkew is how far behind nats-server's clock PostgreSQL's
// may be for Retake to find the rows of a submission's refusals. Small:
// Retake scans every refusal recorded since (by rejections_at), once per
// submission a rewind redelivers, and a flood of refusals must not stall
// a takeover. Clocks further apart than this leave the row, as before.
const submissionClockSkew = time.Minute

// Retake deletes what an earlier take-up of the submission whose order id
// is submission, stored at storedAt, recorded of its refusal
// (postgres.Rejection.Submission), before the NATS intake judges it anew.
// That take-up's replica stopped before it acknowledged the submission:
// killed between its record and the check of its pin (RejectTentatively's
// settle never ran), or between its answer and its ack. Left, the row said
// refused of a submission the replica taking over may accept, and that a
// refusal given twice was two. Whatever this take-up decides is recorded
// as its own: one row per submission, the last decision's.
func (s *Service) Retake(ctx context.Context, submission uuid.UUID, storedAt time.Time) error {
	n, err := s.store.DeleteSubmissionRejections(ctx, submission, storedAt.Add(-submissionClockSkew))
	if err != nil {
		return err
	}
	if n > 0 {
		s.logger.Info("a refusal not acknowledged is withdrawn; the submission is judged again", "order_id", submission,
			"rejections", n)
	}
	return nil
}

// Unrecorded counts a refusal left out of rejections (the API records at
// most an address's per-IP allowance a minute): the metric counts every
// refusal, recorded or not.
func (s *Service) Unrecorded(code string) {
	s.opts.Metrics.Rejected(order.Code(code))
}

// Prune deletes the finished orders, the recorded rejections, the
// runbook delegations of orders never recorded and the maintenance
// switches (host_maintenance_log) older than the retention period, in
// batches, and returns how many rows it deleted. Rejections are kept as
// long as orders: every refused request adds one, an unauthenticated one
// too, so without this the table only grew. The switches go with the
// refusals they explain.
func (s *Service) Prune(ctx context.Context) (int, error) {
	if s.opts.Retention == nil {
		return 0, nil
	}
	keep := s.opts.Retention()
	if keep <= 0 {
		return 0, nil
	}
	before := time.Now().Add(-keep)
	total := 0
	for _, del := range []func(context.Context, time.Time, int) (int64, error){
		s.store.DeleteFinishedBefore, s.store.DeleteRejectionsBefore, s.store.DeleteOrphanDelegationsBefore,
		s.store.DeleteMaintenanceLogBefore,
	} {
		for {
			n, err := del(ctx, before, 1000)
			total += int(n)
			if err != nil {
				return total, err
			}
			if n < 1000 {
				break
			}
		}
	}
	return total, nil
}
