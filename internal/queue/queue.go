// Package queue is orderly's transport on NATS JetStream: the orders stream
// with one durable consumer per host, status events, and the host registry
// (leases and heartbeats) in a KV bucket. PostgreSQL stays the system of
// record; nothing here is trusted as the truth about an order.
package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/config"
)

// Names of the JetStream objects and subjects (DESIGN §1).
const (
	OrdersStream   = "ORDERLY_ORDERS"
	OrdersSubject  = "orderly.orders." // + host
	SubmitStream   = "ORDERLY_SUBMIT"
	SubmitSubject  = "orderly.submit."  // + host
	EventsSubject  = "orderly.events."  // + host + "." + order id
	OutputSubject  = "orderly.output."  // + host + "." + order id
	ControlSubject = "orderly.control." // + host
	HostsBucket    = "orderly_hosts"
)

// Options tune the JetStream objects.
type Options struct {
	Replicas    int
	DedupWindow time.Duration // ≥ 2 minutes (DESIGN §2.4)
	AckWait     time.Duration // redelivery delay of an unacked order
	LeaseTTL    time.Duration // how long a dead worker holds its host
	// FinishedTTL is how long the live stream keeps the last message of a
	// finished order's subjects (events.go); at least a second.
	FinishedTTL time.Duration
	// SubmitBacklog is how many NATS submissions per host may wait for
	// the API's intake (0: DefaultSubmitBacklog); more are refused.
	SubmitBacklog int
	// Now is this host's clock; nil is time.Now. Tests set one that is
	// off, as a host's may be.
	Now func() time.Time
	// PurgeListEvery is how often PurgeAcked reads every host consumer,
	// not only those of the hosts it published to (purge.go); 0 is
	// DefaultPurgeListEvery.
	PurgeListEvery time.Duration
	// Logger hears about streams kept as they are, or made smaller, when
	// JetStream cannot reserve their storage (ensureStream); nil discards.
	Logger *slog.Logger
}

// What ORDERLY_SUBMIT holds at most: NATS submissions per host waiting
// for the API's intake, and bytes in all. A publish past either is
// refused by the server (a JetStream publish hears "maximum messages per
// subject exceeded" or "maximum bytes exceeded").
const (
	DefaultSubmitBacklog = 100_000
	SubmitMaxBytes       = 1 << 30
)

// Queue wraps one NATS connection and its JetStream context.
type Queue struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	opts Options
	// creator: made by New (the API, serve), whose credential may create
	// the streams; a worker's Bind may not.
	creator   bool
	ensuredAt atomic.Int64 // unix ns of the last reensure
	// liveFound: the connection's reconnect count when Mend last found
	// the streams (made them, or they were there); mendedAt: unix ns of
	// that look.
	liveFound atomic.Uint64
	mendedAt  atomic.Int64
	// mendKept: the hand-made limits Mend last found it could not set
	// back for want of storage ("" none), said once (mend.go).
	mendKept atomic.Value
	// restarts: FollowRestarts's count, nil without.
	restarts atomic.Pointer[func() uint64]
	// genKey: the key the publish generation is signed with
	// (SignGenerations), nil without.
	genKey atomic.Pointer[MarkKey]
	// foreign: the publish generations read that another key signed
	// (ForeignGenerations).
	foreign foreignGenerations
	storing storing // whether publishes are acknowledged (storing.go)
	// sendOrder stands in for publish when set: a test's stall or lost
	// PubAck (storing_internal_test.go).
	sendOrder func(ctx context.Context, host string, id uuid.UUID) (uint64, error)
	// contact: whether the server answers a standby (contact.go).
	contact contact
	// hostsKept: the hosts bucket's stream as last read (hostsread.go).
	hostsKept atomic.Pointer[hostsRead]
	// leases: what this process learned of each host's lease across
	// its waits (leaseKnown), by host; leasesMu orders its changes
	// (changeLease).
	leases   sync.Map
	leasesMu sync.Mutex
	// hostIterStopped: when StopHostIterator last stopped an iterator
	// (deadpulls.go), nil before.
	hostIterStopped atomic.Pointer[time.Time]
	// deferred: JetStream refused a stream's or the bucket's settings for
	// want of storage; retrying: ApplyDeferredSettings runs (storage.go).
	deferred, retrying atomic.Bool

	// marks: the hosts Publish sent orders to since PurgeAcked last
	// looked; purge: what PurgeAcked knows of each host (purge.go).
	marks marks
	purge purgeState
	// mark: the bucket of the publish generation (restoremark.go).
	mark markBucket
	// eventBufs lends PublishEvent its encode buffers (*[]byte).
	eventBufs sync.Pool
	// ends: endsRecord's headers (endsHeader of opts.FinishedTTL), shared
	// by every message that ends an order's record: read only.
	ends nats.Header
	// ttls: ttlHeader's headers by TTL (time.Duration → nats.Header).
	ttls sync.Map
	// drops: the connection's drops, for a publish to send again what
	// a drop lost (drops.go).
	drops drops
	// hearers: this process's own readers of the finished events it
	// publishes (HearOwnEnds), copied on write.
	hearers   atomic.Pointer[[]OwnEndHearer]
	hearersMu sync.Mutex
}

// PingInterval and MaxPingsOut are how a connection finds its server
// gone silent without closing anything (a frozen or hung node, a partition
// that drops packets): a ping every PingInterval, and the connection is
// dropped, for a reconnect to another node of the cluster, when more than
// MaxPingsOut are unanswered, 10–15 s after the server fell silent.
// nats.go's defaults (2 minutes, 2) left a worker on a frozen node for 4–6
// minutes, its host stopped, while the two other nodes served
// (TestWorkerLeavesAFrozenNATSNode).
const (
	PingInterval = 5 * time.Second
	MaxPingsOut  = 2
)

// ReconnectWait is how long a connection waits after every server of its
// list failed it, plus up to reconnectJitter (reconnectJitterTLS over
// TLS); RefusedReconnectWait bounds the wait while the servers refuse
// its credential, which doubles from ReconnectWait at each round.
const (
	ReconnectWait        = 250 * time.Millisecond
	RefusedReconnectWait = 5 * time.Second
	reconnectJitter      = 100 * time.Millisecond // nats.go's defaults
	reconnectJitterTLS   = time.Second
)

// reconnectDelay is the wait before a connection's next round over its
// servers, after rounds failed in a row, refused when the last failure
// was a refusal of its credential. A worker whose credential was revoked
// (its host taken out of nats.workers, its user out of auth.conf) kept
// trying every ReconnectWait, each try an error line in every server's
// log, about four a second for as long as it ran; it now tries every
// RefusedReconnectWait after a few seconds, and is back within that of
// its host being listed again.
func reconnectDelay(rounds int, refused bool, jitter time.Duration) time.Duration {
	d := ReconnectWait
	if refused {
		for i := 1; i < rounds && d < RefusedReconnectWait; i++ {
			d *= 2
		}
		d = min(d, RefusedReconnectWait)
	}
	if jitter > 0 {
		d += time.Duration(rand.Int64N(int64(jitter)))
	}
	return d
}

// Refused reports whether err is the servers' refusal of a connection's
// credential (not accepted, revoked, expired): nothing but the
// operator's change makes a retry succeed.
func Refused(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// Connect dials NATS with settings suited to a long-running service:
// unlimited reconnects, also past refusals of its credential (nats.go
// otherwise closes the connection for good after the same auth error
// twice: a worker whose host left nats.workers by mistake would stay
// wedged after the host was listed again) though slower while refused
// (reconnectDelay), pings that find a silent server (PingInterval), and a
// client name that shows in server monitoring.
func Connect(urls, name string, opts ...nats.Option) (*nats.Conn, error) {
	var conn atomic.Pointer[nats.Conn]
	delay := func(rounds int) time.Duration {
		c := conn.Load()
		if c == nil {
			return reconnectDelay(rounds, false, reconnectJitter)
		}
		jitter := reconnectJitter
		if c.Opts.Secure || c.Opts.TLSConfig != nil {
			jitter = reconnectJitterTLS
		}
		return reconnectDelay(rounds, Refused(c.LastError()), jitter)
	}
	all := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.CustomReconnectDelay(delay),
		nats.IgnoreAuthErrorAbort(), nats.PingInterval(PingInterval), nats.MaxPingsOutstanding(MaxPingsOut)}, opts...)
	nc, err := nats.Connect(urls, all...)
	conn.Store(nc)
	var bad *url.Error
	if errors.As(err, &bad) && bad.Op == "parse" {
		// url.Parse's error quotes the whole URL, password and all, and
		// its reason may quote a piece of it (a password holding / made
		// the rest a port): neither is logged.
		return nil, fmt.Errorf("connect to nats %s: not a valid URL (percent-encode the characters of a user, password or token that a URL reserves: %% / ? # @ : and spaces)", config.RedactNATS(urls))
	}
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", config.RedactNATS(urls), err)
	}
	return nc, nil
}

// New ensures the streams and the KV bucket exist with the right settings
// and returns a Queue over nc.
func New(ctx context.Context, nc *nats.Conn, opts Options) (*Queue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return newQueue(ctx, nc, js, opts)
}

// newQueue is New over js, which a test may wrap to answer as another
// nats-server would.
func newQueue(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, opts Options) (*Queue, error) {
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	if opts.DedupWindow < 2*time.Minute {
		opts.DedupWindow = 2 * time.Minute
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	if opts.FinishedTTL < time.Second {
		opts.FinishedTTL = time.Minute
	}
	if err := checkReplicas(nc, opts.Replicas); err != nil {
		return nil, err
	}
	q := &Queue{nc: nc, js: js, opts: opts, creator: true, ends: endsHeader(opts.FinishedTTL)}
	var err error
	if q.kv, err = q.ensure(ctx); err != nil {
		return nil, err
	}
	// Publish and the requests of RetryOnDrop are sent again when the
	// connection drops under them (a worker's Bind does the same).
	q.drops.watch(nc)
	return q, nil
}

// ensure creates the streams and the KV bucket, or brings their settings
// back to these: at start, and again when one was deleted while orderly
// ran (an operator's mistake that would otherwise refuse every submission
// until a restart).
func (q *Queue) ensure(ctx context.Context) (jetstream.KeyValue, error) {
	opts := q.opts
	old := q.ordersStreamConfig(ctx)
	// Per-host consumers filter disjoint subjects, so they never overlap.
	err := q.ensureOrdersStream(ctx, jetstream.StreamConfig{
		Name:        OrdersStream,
		Description: "orders per host; one durable consumer per host executes them in order",
		Subjects:    []string{OrdersSubject + ">"},
		Retention:   q.ordersRetention(old),
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Duplicates:  opts.DedupWindow,
		Discard:     jetstream.DiscardOld,
	}, old)
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", OrdersStream, replicasError(err, opts.Replicas))
	}
	if old != nil && old.Retention == jetstream.WorkQueuePolicy && q.nc.ConnectedClusterName() == "" {
		// Works as it did; an operator who upgraded cannot tell the kind
		// without the nats CLI, so say which it is and where the switch is.
		q.logger().Info("the orders stream is a work queue, as an orderly before 2026-12-04 (morning) created it: it works as before; a stream with limits retention writes less per order on a single nats-server",
			"stream", OrdersStream, "hint", workQueueHint)
	}
	err = q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        SubmitStream,
		Description: "orders submitted asynchronously over NATS, awaiting the API's intake",
		Subjects:    []string{SubmitSubject + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
		Duplicates:  SubmitDedupWindow, // the idempotency key deduplicates (intake.go)
		// Bounded: a holder of the submitter's credential, with or
		// without a token, could otherwise fill JetStream's disk, which
		// the orders stream (every REST submission) shares. Per host, so
		// that one host's flood leaves the others' submissions room.
		MaxMsgsPerSubject:    int64(cmp.Or(opts.SubmitBacklog, DefaultSubmitBacklog)),
		MaxBytes:             SubmitMaxBytes,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", SubmitStream, replicasError(err, opts.Replicas))
	}
	if _, err := q.putLiveStream(ctx); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", LiveStream, replicasError(err, opts.Replicas))
	}
	kv, err := q.ensureBucket(ctx, q.hostsStream(ctx))
	if err != nil {
		return nil, fmt.Errorf("create kv bucket %s: %w", HostsBucket, replicasError(err, opts.Replicas))
	}
	// Made here, not only at the first raise of the publish generation:
	// the workers write their claim marks to it from their first order.
	// Not a reason to refuse to start: the raise makes it again.
	if _, err := q.marksKV(ctx, true); err != nil && q.opts.Logger != nil {
		q.opts.Logger.Warn("could not create a kv bucket; the API tries again when it raises the publish generation",
			"bucket", MarksBucket, "error", replicasError(err, opts.Replicas))
	}
	return kv, nil
}

// Conn returns the underlying connection.
func (q *Queue) Conn() *nats.Conn { return q.nc }

// JetStream returns the JetStream context.
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

// Ping reports whether the NATS connection is up; /readyz uses it.
func (q *Queue) Ping(ctx context.Context) error {
	if !q.nc.IsConnected() {
		return errors.New("nats: not connected")
	}
	return q.nc.FlushWithContext(ctx)
}

// publishAckWait bounds a publish's wait for its PubAck, whatever the
// caller's deadline (jetstream's own default, without one, is the same): a
// publish in flight when nats-server died is never answered, and it is the
// caller's retry, deduplicated by Nats-Msg-Id, that gets the order through.
// The NATS intake's attempt allows 15 s, and a host's later submissions
// wait behind it (TestFaultsNATSRestartIntake: 13 s once).
const publishAckWait = 5 * time.Second

// ordersStreamName is every order publish's Nats-Expected-Stream value,
// shared: nats.go only reads a message's header.
var ordersStreamName = []string{OrdersStream}

// Publish sends an order to its host's subject with Nats-Msg-Id set to the
// order id, so a republish by the reconciler is deduplicated. The payload is
// only the id: the worker reads the order from PostgreSQL. Its outcome
// tells Storing whether the server stores (storing.go). The message comes
// with its two headers made: as publish options (WithMsgID,
// WithExpectStream) they cost an options struct, a closure, an empty
// header map and its growth, and a slice per header (docs/benchmarks.md,
// "The async submit after group commit, profiled").
//
// A connection that drops while it waits for the PubAck sends the
// message again at once (drops.go), up to publishTries in all within the
// one publishAckWait: the Nats-Msg-Id makes a second copy a duplicate
// the stream drops, answered with the first's sequence. Before, the
// publish waited out its 5 s and the submission was answered 503.
func (q *Queue) Publish(caller context.Context, host string, id uuid.UUID) (uint64, error) {
	deadline := time.Now().Add(publishAckWait)
	if d, ok := caller.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	reconnects := q.nc.Stats().Reconnects
	var seq uint64
	var err error
	for try := 1; ; try++ {
		ctx, ep, cancel := q.drops.bound(caller, deadline)
		seq, err = q.publish(ctx, host, id)
		cancel()
		if !ep.again(caller, err, try, deadline) {
			break
		}
		q.logger().Debug("the nats connection dropped while an order's publish waited for its PubAck: publishing it again",
			"order_id", id, "host", host, "try", try+1, "error", err)
	}
	q.published(caller, err, reconnects, host, id)
	return seq, err
}

// publish sends id's message to its host's subject and waits for its
// PubAck within ctx, without telling Storing.
func (q *Queue) publish(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
	if q.sendOrder != nil {
		return q.sendOrder(ctx, host, id)
	}
	return q.publishOrder(ctx, host, id)
}

// publishOrder is publish without a test's stand-in.
func (q *Queue) publishOrder(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
	sid := id.String()
	m := &nats.Msg{Subject: OrdersSubject + host, Data: []byte(sid),
		Header: nats.Header{jetstream.MsgIDHeader: {sid}, jetstream.ExpectedStreamHeader: ordersStreamName}}
	seq, err := q.publishStored(ctx, m)
	if errors.Is(err, jetstream.ErrNoStreamResponse) && q.reensure(ctx) {
		seq, err = q.publishStored(ctx, m)
	}
	if err != nil {
		return 0, fmt.Errorf("publish order %s: %w", id, err)
	}
	q.marks.add(host, seq)
	return seq, nil
}

// now reads this host's clock (Options.Now).
func (q *Queue) now() time.Time {
	if q.opts.Now != nil {
		return q.opts.Now()
	}
	return time.Now()
}

// reensure creates the streams again when the orders stream is gone (no
// stream answered a publish), at most once a second, and reports whether
// it exists now. Only a queue made by New may: a worker's credential
// cannot create streams.
func (q *Queue) reensure(ctx context.Context) bool {
	if !q.creator {
		return false
	}
	now := time.Now().UnixNano()
	last := q.ensuredAt.Load()
	if now-last < int64(time.Second) || !q.ensuredAt.CompareAndSwap(last, now) {
		return false
	}
	if _, err := q.js.Stream(ctx, OrdersStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return false // there, or JetStream cannot say: not for ensure to mend
	}
	_, err := q.ensure(ctx)
	return err == nil
}

// workQueueHint is where the switch from a work-queue orders stream to
// limits retention is written down.
const workQueueHint = "docs/deploy.md, Upgrading (fourteenth round): drain the orders, stop the API and the workers, nats stream rm ORDERLY_ORDERS, start again"

// ordersRetention is the retention of the orders stream as ensure creates
// or updates it. On a server that is not part of a cluster it is limits:
// an ack only moves the host consumer's ack floor, which is in memory
// there (hostConsumerConfig), so it writes nothing; PurgeAcked removes
// acknowledged orders in bulk. A work queue deleted each acked order, a
// tombstone written and fsynced per order (and, on the sync path, a block
// file created and one unlinked): half of nats-server's syncs per order
// (docs/benchmarks.md, "nats-server's work per order, counted"). On a
// cluster it stays a work queue, where consumers keep their state on
// disk. nats-server refuses to change the retention of a stream, so one
// that exists keeps its own: an orderly from before keeps its work queue
// (docs/deploy.md, "Upgrading"); old is that stream's settings
// (ordersStreamConfig).
func (q *Queue) ordersRetention(old *jetstream.StreamConfig) jetstream.RetentionPolicy {
	if old != nil {
		return old.Retention
	}
	if q.nc.ConnectedClusterName() == "" {
		return jetstream.LimitsPolicy
	}
	return jetstream.WorkQueuePolicy
}

// ordersStreamConfig is the orders stream's settings as they are, nil
// when there is no such stream or JetStream cannot say.
func (q *Queue) ordersStreamConfig(ctx context.Context) *jetstream.StreamConfig {
	st, err := q.js.Stream(ctx, OrdersStream)
	if err != nil {
		return nil
	}
	return &st.CachedInfo().Config
}

// CheckStreams reports whether the orders stream exists, creating it again
// (reensure) when it was deleted: readiness is more than a connection.
func (q *Queue) CheckStreams(ctx context.Context) error {
	_, err := q.js.Stream(ctx, OrdersStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && q.reensure(ctx) {
		return nil // created again
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", OrdersStream, err)
	}
	return nil
}

// Missing returns those of want, orders of host, whose messages are not in
// the orders stream (waiting, or delivered and not yet acknowledged). It
// reads the host's messages in stream order until it has seen all of
// want, so the oldest orders cost a read each; after scan messages it
// stops and decides nothing (nil). A deleted stream holds none.
func (q *Queue) Missing(ctx context.Context, host string, want []uuid.UUID, scan int) ([]uuid.UUID, error) {
	left := make(map[uuid.UUID]bool, len(want))
	for _, id := range want {
		left[id] = true
	}
	st, err := q.js.Stream(ctx, OrdersStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return want, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", OrdersStream, err)
	}
	read, undecided := 0, false
	err = eachOrderMessage(ctx, st, host, func(_ uint64, id uuid.UUID) bool {
		delete(left, id)
		read++
		undecided = len(left) > 0 && read == scan
		return len(left) > 0 && !undecided
	})
	if err != nil || undecided || len(left) == 0 {
		return nil, err
	}
	var missing []uuid.UUID
	for _, id := range want {
		if left[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// ConsumerName is the durable consumer of a host.
func ConsumerName(host string) string { return "host_" + host }

// eachOrderMessage calls fn with the sequence and the order id (uuid.Nil
// when the payload is not one) of each of host's messages in the orders
// stream, oldest first, until fn returns false or none is left. A work
// queue stream refuses a consumer beside the host's own, so they are read
// one by one.
func eachOrderMessage(ctx context.Context, st jetstream.Stream, host string, fn func(seq uint64, id uuid.UUID) bool) error {
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(OrdersSubject+host))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the orders of host %s: %w", host, err)
		}
		id, err := uuid.Parse(string(m.Data))
		if err != nil {
			id = uuid.Nil
		}
		if !fn(m.Sequence, id) {
			return nil
		}
		seq = m.Sequence + 1
	}
}

// HostConsumer returns the host's durable consumer, creating it if needed.
// MaxAckPending 2 lets the worker hold the next order while one runs, so
// that its claim can share the previous result's commit; the worker still
// runs one order at a time, in stream order (DESIGN §2.3).
func (q *Queue) HostConsumer(ctx context.Context, host string) (jetstream.Consumer, error) {
	c, err := q.js.CreateOrUpdateConsumer(ctx, OrdersStream, q.hostConsumerConfig(host, 0))
	if err != nil {
		return nil, fmt.Errorf("create consumer for host %s: %w", host, err)
	}
	return c, nil
}

// hostConsumerConfig is the host's consumer as HostConsumer creates it.
//
// On a server that is not part of a cluster its state (what it delivered,
// its ack floor) is kept in memory (MemoryStorage): with the stream's sync
// always, nats-server otherwise rewrote it through a temporary file, a
// synchronous write, a rename and a directory fsync, 1.6 – 1.8 times per sync
// order (docs/benchmarks.md, "nats-server's work per order, counted"). The
// state is a cache of the stream: acknowledged orders leave the work-queue
// stream, PostgreSQL's claim fences a redelivery, and a server restarted
// without the consumer has the worker create it again at the first message
// still stored (worker/stall.go, RewindHostConsumer), which numbers its
// deliveries from 1 as every tenure does. On a cluster a consumer survives
// its servers' restarts by its assignment, not its state: one restarted
// with its state lost would number deliveries from 1 again under a worker
// still consuming, which the worker's gap check cannot tell from a
// duplicate; there it stays on disk (docs/decisions.md, thirteenth round).
// nats-server refuses to change the storage of an existing consumer: one
// from an older orderly is replaced when a new worker process takes the
// host (RenewHostConsumer), which deletes it first.
//
// A consumer created with start > 0 delivers from that stream sequence on
// (RenewHostConsumer: past what the consumer it replaces had acknowledged,
// which a limits stream still holds until PurgeAcked); with 0, from the
// host's first message still stored.
func (q *Queue) hostConsumerConfig(host string, start uint64) jetstream.ConsumerConfig {
	deliver := jetstream.DeliverAllPolicy
	if start > 0 {
		deliver = jetstream.DeliverByStartSequencePolicy
	}
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(host),
		Description:   "orders of host " + host,
		FilterSubject: OrdersSubject + host,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.opts.AckWait,
		MaxAckPending: 2,
		MaxDeliver:    -1,
		DeliverPolicy: deliver,
		OptStartSeq:   start,
		MemoryStorage: q.nc.ConnectedClusterName() == "",
	}
}

// errWorkQueueDeliverAll is nats-server's JSConsumerWQConsumerNotDeliverAllErr:
// a work-queue stream's consumer must deliver all.
const errWorkQueueDeliverAll jetstream.ErrorCode = 10101

// RenewHostConsumer deletes and recreates the host's durable consumer. A
// worker that has just taken the host over calls it before consuming:
// every message the previous worker held unacknowledged is delivered again
// at once and in stream order (a work-queue stream keeps a message until it
// is acked), instead of after its ack timer, and pull requests that a dead
// or frozen worker left pending die with the old consumer, so none of them
// can take a message out of order.
//
// On a limits-retention stream the acknowledged orders stay until
// PurgeAcked removes them, so the new consumer starts past the old one's
// ack floor: the first order not acknowledged, never one before it. A
// work-queue stream refuses a start sequence (and holds nothing below the
// floor): there it starts at the first message stored.
func (q *Queue) RenewHostConsumer(ctx context.Context, host string) (jetstream.Consumer, error) {
	return q.RenewHostConsumerLooked(ctx, host, HostConsumerLook{})
}

// RenewHostConsumerLooked is RenewHostConsumer starting from what look
// found of the consumer it replaces (LookUpHostConsumer): found, its ack
// floor, with no look-up of its own. A floor read earlier in the
// takeover (beside its statements in PostgreSQL) is at most the
// consumer's floor now: a previous owner still acknowledging meanwhile
// only moves it on, and the consumer made from it delivers again at most
// what was acknowledged since, which the claim finds finished and
// acknowledges.
func (q *Queue) RenewHostConsumerLooked(ctx context.Context, host string, look HostConsumerLook) (jetstream.Consumer, error) {
	name := ConsumerName(host)
	floor := look.floor
	if !look.found {
		if old, err := q.js.Consumer(ctx, OrdersStream, name); err == nil {
			floor = old.CachedInfo().AckFloor.Stream
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("reset consumer of host %s: %w", host, err)
		}
	}
	err := q.js.DeleteConsumer(ctx, OrdersStream, name)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("reset consumer of host %s: %w", host, err)
	}
	if floor == 0 || q.nc.ConnectedClusterName() != "" {
		// Nothing acknowledged, or a cluster's stream: a work queue
		// (ordersRetention), which holds nothing below the floor.
		return q.HostConsumer(ctx, host)
	}
	return q.consumerFrom(ctx, host, floor+1)
}

// RewindHostConsumer rewinds the host's consumer to its ack floor: every
// message it counts as delivered but not acknowledged is delivered again at
// once, in stream order, and deliveries are numbered from 1 again, as on a
// new consumer. Unlike RenewHostConsumer it keeps the consumer, so on a
// cluster it is a request to the consumer's own leader, not a delete and a
// create that only the meta group's leader performs (right after the meta
// leader was killed they took 5 – 31 s, a reset 8 – 15 ms;
// docs/reliability.md). It also keeps the pull requests pending on the
// consumer and the settings it has, so it is only for the worker process
// that set the consumer up last (worker/takeover.go); on a cluster it first
// waits out the pull requests of the iterator that worker stopped last
// (waitStoppedPulls), which the consumer's leader may not see are dead. A
// missing consumer is created; one that cannot be reset (nats-server before
// 2.14) is recreated, as RenewHostConsumer does.
func (q *Queue) RewindHostConsumer(ctx context.Context, host string) (jetstream.Consumer, error) {
	name := ConsumerName(host)
	if q.nc.ConnectedClusterName() == "" {
		// A single server answers a look-up at once but never a reset of a
		// consumer it does not have, which then cost resetWait; and it
		// loses the consumer whenever it restarts, since the consumer's
		// state is in memory (hostConsumerConfig).
		lctx, cancel := context.WithTimeout(ctx, resetWait)
		_, err := q.js.Consumer(lctx, OrdersStream, name)
		cancel()
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return q.HostConsumer(ctx, host)
		}
	}
	if err := q.waitStoppedPulls(ctx); err != nil {
		return nil, fmt.Errorf("rewind consumer of host %s: %w", host, err)
	}
	rctx, cancel := context.WithTimeout(ctx, resetWait)
	_, err := q.js.ResetConsumer(rctx, OrdersStream, name)
	cancel()
	// The handle to consume with; after an unanswered reset, also what tells
	// why: only the consumer's leader answers a reset, and nobody says no,
	// whether the consumer has no leader yet (an election), is gone (deleted
	// by hand), or the request never reached it (nats-server before 2.14
	// has no reset, and an authorization written for an older orderly does
	// not allow it).
	lctx, cancel := context.WithTimeout(ctx, resetWait)
	c, lerr := q.js.Consumer(lctx, OrdersStream, name)
	cancel()
	switch {
	case errors.Is(lerr, jetstream.ErrConsumerNotFound):
		return q.HostConsumer(ctx, host) // new: it starts at the first unacked message
	case lerr != nil:
		return nil, fmt.Errorf("rewind consumer of host %s: %w", host, cmp.Or(err, lerr))
	case err != nil:
		// Its leader answers a look-up, not a reset: recreate it.
		return q.RenewHostConsumer(ctx, host)
	}
	return c, nil
}

// resetWait bounds a consumer reset and the look-up after it: a quiet one
// takes milliseconds, and a request nobody answers would otherwise wait
// for the caller's deadline, or jetstream's 5 s, before the tenure tries
// again.
const resetWait = 2 * time.Second

// StopIterator stops it and waits until its subscription is gone, so that
// no pull request of it outlives a rewind that follows: the unsubscribe is
// then written to the server before the rewind request. Closed only sees
// a subscription that is already gone when it is called, so it is asked
// again each millisecond (the iterator's own goroutine unsubscribes).
func StopIterator(it jetstream.MessagesContext) {
	it.Stop()
	c, ok := it.(interface{ Closed() <-chan struct{} })
	if !ok {
		return
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(2 * time.Second)
	for {
		select {
		case <-c.Closed():
			return
		case <-deadline:
			return
		case <-tick.C:
		}
	}
}
