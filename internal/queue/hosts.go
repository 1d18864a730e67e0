package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// hostsStream is the hosts bucket's stream: what nats.go makes of a
// bucket with the lease's TTL (CreateKeyValue; TestHostsStreamIsNATSBucket
// compares the two), without rollups and so without expiry markers. A
// message with Nats-Rollup: all purges a stream whole, whatever key it is
// written to, and NATS permissions cannot refuse a header: a worker
// writing its own standby report with it purged every host's lease,
// heartbeat and standby report, each holder stopping its claims until its
// next renewal and every host shown offline. nats-server allows no expiry
// markers (SubjectDeleteMarkerTTL) without rollups, so a standby no
// longer wakes on the marker of its holder's expiry but at the end of a
// lease from the last renewal it saw (AcquireLease). A bucket that an
// orderly before this made with markers has its message TTLs on, which
// NATS never turns off: they stay on (nothing writes one; a worker could
// only shorten its own keys).
func (q *Queue) hostsStream(ctx context.Context) jetstream.StreamConfig {
	ttl := false
	if st, err := q.js.Stream(ctx, "KV_"+HostsBucket); err == nil {
		ttl = st.CachedInfo().Config.AllowMsgTTL
	}
	c := q.kvStream(HostsBucket, "worker leases and heartbeats; entries expire when a worker stops renewing them")
	c.MaxAge = q.opts.LeaseTTL
	c.Duplicates = min(c.Duplicates, q.opts.LeaseTTL)
	c.AllowMsgTTL = ttl
	return c
}

// HostInfo is a worker's heartbeat, kept in the KV bucket under info.<host>
// by the worker that holds the host and under standby.<host> by one that
// waits for it. The bucket's TTL removes it when the worker stops beating:
// present means online (or waiting).
type HostInfo struct {
	Host      string    `json:"host"`
	Instance  string    `json:"instance"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	LastSeen  time.Time `json:"last_seen"`
	// CurrentOrder is what the worker ran at its last beat. The hosts
	// listing reads the current order from PostgreSQL instead, which is
	// not a heartbeat late; API replicas from before that read this.
	CurrentOrder *uuid.UUID `json:"current_order,omitempty"`
	// RestoreGuard is whether the worker reads and writes its host's
	// claim mark (ClaimMark): "on", or "off: " and why; empty from a
	// worker before it, or before its first read.
	RestoreGuard string `json:"restore_guard,omitempty"`
	// PostgresUnreachable is set while the worker's statements to
	// PostgreSQL fail: it is online (it holds the lease, NATS reaches
	// it) but runs nothing. Nil while PostgreSQL answers, or from a
	// worker before it.
	PostgresUnreachable *PostgresOutage `json:"postgres_unreachable,omitempty"`
}

// PostgresOutage is a worker's outage of PostgreSQL as its heartbeat
// tells it: since the first failed statement, the last error and how many
// failed.
type PostgresOutage struct {
	Since    time.Time `json:"since"`
	Error    string    `json:"error"`
	Failures int       `json:"failures"`
}

// Heartbeat records info as the host's current state, whoever wrote it
// last; the worker that holds the host writes with Lease.Beat.
func (q *Queue) Heartbeat(ctx context.Context, info HostInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if _, err := q.kv.Put(ctx, "info."+info.Host, b); err != nil {
		return fmt.Errorf("heartbeat of host %s: %w", info.Host, err)
	}
	return nil
}

// OnlineHosts returns the heartbeat of every host whose worker is alive:
// whose heartbeat entry is there and recent. An entry's age and the
// LastSeen it returns are the server's: when the server stored the beat,
// judged against the server's time, not this host's clock nor the
// worker's, either of which may be minutes off.
func (q *Queue) OnlineHosts(ctx context.Context) (map[string]HostInfo, error) {
	hs, err := q.beats(ctx, "info.", "*")
	if err != nil {
		return nil, fmt.Errorf("list online hosts: %w", err)
	}
	return hs, nil
}

// Workers returns, by host, the heartbeat of the worker serving it (as
// OnlineHosts) and the report of a worker waiting as its standby, judged
// as heartbeats are. A host with several standbys shows the one that
// reported last: the key is one per host, the one key of the kind NATS
// lets that host's workers write. A report naming the worker whose
// heartbeat is live is left out: it is the last report of a standby that
// has taken the host over and could not remove it (one in flight as it
// took the lease, or NATS away); it expires with the bucket's TTL. This
// is the one place that rule lives: the hosts listing, the fleet gauges
// and the refusal to forget a host all read standbys from here.
func (q *Queue) Workers(ctx context.Context) (online, standbys map[string]HostInfo, err error) {
	return q.workers(ctx, "*")
}

// WorkersOf is Workers for one host, reading that host's keys only: a
// view of one host costs one host's reads, not the fleet's.
func (q *Queue) WorkersOf(ctx context.Context, host string) (online, standbys map[string]HostInfo, err error) {
	return q.workers(ctx, host)
}

// workers is Workers for the hosts that match, a host or "*". Heartbeats
// and standby reports are read in one pass of one consumer, judged
// against the server's time that its creation's answer states: two
// JetStream requests (its creation, its deletion) where a pass per
// prefix, each after a request for the server's time, sent six one after
// another, each waiting out jetstream's 5 s when NATS did not answer (the
// hosts listing took up to half a minute in an outage). ctx bounds them
// all (the API gives the listing its own deadline).
func (q *Queue) workers(ctx context.Context, match string) (online, standbys map[string]HostInfo, err error) {
	online, standbys = map[string]HostInfo{}, map[string]HostInfo{}
	err = q.lastOfKeys(ctx, []string{"info." + match, "standby." + match}, func(now time.Time, key string, value []byte, created time.Time) {
		prefix, into := "info.", online
		if strings.HasPrefix(key, "standby.") {
			prefix, into = "standby.", standbys
		}
		if h, ok := q.live(key, value, created, prefix, now); ok {
			into[h.Host] = h
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list online hosts and standby workers: %w", err)
	}
	for host, sb := range standbys {
		if h, ok := online[host]; ok && h.Instance == sb.Instance {
			delete(standbys, host)
		}
	}
	return online, standbys, nil
}

// StandbyBeat records info as the report of a worker of info.Host that
// waits for the host's lease, and returns the entry's revision for
// StandbyGone.
func (q *Queue) StandbyBeat(ctx context.Context, info HostInfo) (uint64, error) {
	b, err := json.Marshal(info)
	if err != nil {
		return 0, err
	}
	// Sent again when a drop ends it (dropKV): the report is this
	// worker's own, written twice is written once.
	rev, err := q.hostsOnDrop().Put(ctx, "standby."+info.Host, b)
	if err != nil {
		return 0, fmt.Errorf("standby report of host %s: %w", info.Host, err)
	}
	return rev, nil
}

// StandbyGone removes the standby report of host that StandbyBeat wrote
// as revision rev, and leaves it to another standby of the host that
// reported since.
//
// Sent again when a drop ends it, as dropKV's Delete, but a copy sent
// again and refused is taken as done without reading the key back: a
// worker may not read its host's standby report (natsembed's
// WorkerPermissions: written and deleted, never read back), and that
// read, refused, waited out the removal's bound before the takeover
// went on, to return a refusal of a delete that was applied. Refused,
// the copy finds the report either removed by the first or another
// standby's, which it leaves: nothing is left to do either way.
func (q *Queue) StandbyGone(ctx context.Context, host string, rev uint64) error {
	return q.sendOnDrop(ctx, func(ctx context.Context) error {
		return q.kv.Delete(ctx, "standby."+host, jetstream.LastRevision(rev))
	}, func(context.Context) bool { return true })
}

// beats reads the live reports of the keys prefix<host>, by host, for
// the hosts that match (a host, or "*").
//
// It reads the bucket through a push consumer of its own over a plain
// subscription, not nats.go's KV watch. A watch takes a stored message
// with an empty body and "Status: 100" for the server's control message:
// one a worker wrote on its own key (its heartbeat, its standby report)
// was never handed over, so the watch never said it had read every key,
// or, behind other keys, it was fetched again at each of them (an ordered
// consumer's gap); the listing of every host waited out its deadline.
// Its "Nats-Consumer-Stalled" header named a subject the reading
// connection published an empty message to: the API's, purging or
// deleting any stream. The consumer here has no heartbeats nor flow
// control, so the server sends nothing on its subject but stored
// messages, each read as one.
func (q *Queue) beats(ctx context.Context, prefix, match string) (map[string]HostInfo, error) {
	out := map[string]HostInfo{}
	err := q.lastOfKeys(ctx, []string{prefix + match}, func(now time.Time, key string, value []byte, created time.Time) {
		if h, ok := q.live(key, value, created, prefix, now); ok {
			out[h.Host] = h
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lastOfKeys calls fn with the last entry of every key of the hosts
// bucket that one of keys matches, in the order they were stored, and
// the server's time when the pass began (its answer to the consumer's
// creation states it; this host's clock when it does not); deleted keys
// come as their empty markers. See beats for why it is not a KV watch.
func (q *Queue) lastOfKeys(ctx context.Context, keys []string, fn func(now time.Time, key string, value []byte, created time.Time)) error {
	pre := "$KV." + HostsBucket + "."
	inbox := q.nc.NewInbox()
	sub, err := q.nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	filters := make([]string, len(keys))
	for i, k := range keys {
		filters[i] = pre + k
	}
	cfg := jetstream.ConsumerConfig{
		DeliverSubject:    inbox,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	}
	if len(filters) == 1 {
		cfg.FilterSubject = filters[0]
	} else {
		cfg.FilterSubjects = filters
	}
	c, err := q.js.CreatePushConsumer(ctx, "KV_"+HostsBucket, cfg)
	if err != nil {
		return err
	}
	defer q.dropPass(ctx, c.CachedInfo().Name)
	now := c.CachedInfo().TimeStamp
	if now.IsZero() {
		now = q.now()
	}
	want := c.CachedInfo().NumPending
	for got := uint64(0); got < want; {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return err
		}
		meta, err := m.Metadata()
		if err != nil || !strings.HasPrefix(m.Subject, pre) {
			continue // not a stored message: the server sends none other here
		}
		got++
		fn(now, m.Subject[len(pre):], m.Data, meta.Timestamp)
		if meta.NumPending == 0 {
			break
		}
	}
	return nil
}

// dropPass deletes the consumer of a pass of lastOfKeys, even when the
// caller went away (a client that hung up), within 2 s, and within
// ctx's deadline when it has one: a listing that must answer within its
// bound does not wait 2 s more for a server that did not answer. A
// consumer left is removed by the server after its InactiveThreshold.
func (q *Queue) dropPass(ctx context.Context, name string) {
	end := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		end = d
	}
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end)
	defer cancel()
	_ = q.js.DeleteConsumer(dctx, "KV_"+HostsBucket, name)
}

// HostOnline reports whether host's worker is alive, as OnlineHosts
// judges it, reading that host's heartbeat only.
func (q *Queue) HostOnline(ctx context.Context, host string) (bool, error) {
	e, err := q.hostsOnDrop().Get(ctx, "info."+host)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the heartbeat of host %s: %w", host, err)
	}
	_, ok := q.live(e.Key(), e.Value(), e.Created(), "info.", q.serverNow(ctx))
	return ok, nil
}

// live returns the report value (of key, a key prefix<host>, stored at
// created) holds when it is a live worker's, with its LastSeen set to
// when the server stored it and its StartedAt on the server's clock too.
func (q *Queue) live(key string, value []byte, created time.Time, prefix string, now time.Time) (HostInfo, bool) {
	var h HostInfo
	// An entry older than two leases should have expired: the server
	// could not remove it (a full disk stops its writes), and its worker
	// is not beating. An entry counts only for the host of its key, the
	// one key NATS lets that host's worker write: read by the host its
	// body names, one host's worker made another host online (hiding its
	// outage from the fleet alerts, refusing its removal) or added any
	// name to the list.
	if json.Unmarshal(value, &h) != nil || prefix+h.Host != key || now.Sub(created) >= 2*q.opts.LeaseTTL {
		return HostInfo{}, false
	}
	// StartedAt is the worker's clock, which may be minutes off the
	// server's: the standby's "started waiting" showed a worker running
	// behind as waiting for minutes the moment it started, and one
	// ahead as "just now" for as long. The time it has run (or waited)
	// is its own clock's, back from when the server stored the report.
	if !h.StartedAt.IsZero() && !h.LastSeen.IsZero() && !h.LastSeen.Before(h.StartedAt) {
		h.StartedAt = created.Add(-h.LastSeen.Sub(h.StartedAt)).UTC()
	} else {
		h.StartedAt = created.UTC()
	}
	h.LastSeen = created.UTC()
	return h, true
}

// serverNow is the time of the NATS server that keeps the hosts bucket,
// as its stream info states it; this host's clock when it cannot say.
func (q *Queue) serverNow(ctx context.Context) time.Time {
	if st, err := q.hostsOnDrop().Status(ctx); err == nil {
		if s, ok := st.(*jetstream.KeyValueBucketStatus); ok && !s.StreamInfo().TimeStamp.IsZero() {
			return s.StreamInfo().TimeStamp
		}
	}
	return q.now()
}

// Lease is a worker's exclusive claim on a host id. At most one worker per
// host consumes its orders; a second one waits as a standby until the lease
// is released or expires (DESIGN §2.3).
//
// Renew and Beat may run at the same time, each in a goroutine of its
// own (the worker renews beside its heartbeat, not behind it); nothing
// else may.
type Lease struct {
	q        *Queue
	key      string
	host     string
	instance string
	k        MarkKey // the host's key, which signs what it writes; nil: none
	// mu guards rev against Beat's read; Renew's goroutine, the only
	// writer, reads it without.
	mu      sync.Mutex
	rev     uint64    // the lease key's revision, from its last renewal
	written time.Time // when the last write the server took was sent (Written)
	beat    uint64    // the revision of this lease's last heartbeat; 0 for none
	freed   string    // how the key was found free (Freed)
	lapsed  func()    // OnLapse's
	lost    int       // take-backs past the lease beaten in a row (retake)
	// owners is CheckOwner's: where the host's takeovers are recorded;
	// nil: no take-back by put.
	owners Owners
	// before is the host's owner as read before this lease's take
	// (AcquireOwnedLease), if read (beforeRead).
	before     HostOwner
	beforeRead bool
	// unconfirmed: a plain write of the key awaits its confirmation
	// (putAsOwner).
	unconfirmed bool
	// ttl: the bucket's TTL as last read (SetTTL), in nanoseconds.
	ttl atomic.Int64
}

// ErrLeaseLost is returned by Renew when another worker took the host.
var ErrLeaseLost = errors.New("lease lost")

// ErrNotHolder is returned by Beat when what it read says that the lease
// may no longer be this worker's: the key names another worker, or is
// gone, or another worker wrote the heartbeat since the last renewal. The
// next renewal says whether it is.
var ErrNotHolder = errors.New("the host lease may not be this worker's")

// AcquireLease takes the host's lease for instance, waiting as long as
// another live worker holds it. standby is called once if it has to wait.
//
// A waiting worker watches the lease key: its holder's release deletes
// it, which wakes it at once, and each renewal is a put it sees. The
// hosts bucket takes no rollups, so it has no expiry markers
// (hostsStream): the standby tries the key when a lease has passed since
// the last renewal it saw (or, before it saw one, since the server stored
// the key), and again every lease/16 (at most 100 ms, retryEvery) until
// the server has removed it or a renewal comes. The lease is the bucket's
// TTL as it stands (leaseClock). A try that finds the key still there
// reads it, and times the lease from when the server stored it: a watch that missed
// renewals (its consumer deleted) makes tries, not a takeover. Without a
// watch, the try is every LeaseTTL/4.
//
// A bucket with markers (one an orderly from before made, until a new
// API updates it, or an older API updated again during a rolling
// upgrade) takes rollups. There a marker wakes the standby at its
// holder's expiry, its try is every LeaseTTL, and a key found gone at
// that try less than LeaseTTL after the watch saw its holder renew it
// was neither released nor expired: it was purged, with the whole
// bucket, by a message with Nats-Rollup: all, which any worker's
// credential can write on its own keys. The holder takes it again at its
// next renewal; the standby leaves it to the holder and tries again once
// LeaseTTL has passed since that renewal, when a dead holder's lease
// would have expired. Without this, a worker of another host purging the
// bucket over and over moved hosts between their workers, ending their
// running orders interrupted.
//
// Either way a key not released by its holder is taken only once the
// server has answered this process for a whole lease since it last
// fell silent (contact.go): a frozen server heard no renewal either,
// and expires every lease at its thaw. While the server does not
// answer, the try fails.
func (q *Queue) AcquireLease(ctx context.Context, host, instance string, standby func(holder string)) (*Lease, error) {
	return q.AcquireSignedLease(ctx, host, instance, nil, standby)
}

// AcquireSignedLease is AcquireLease for a worker with its host's key, k
// (nil: none, as AcquireLease). The lease it writes is signed with k, and
// what it reads of the key is judged by it (leaseSeen): a value k did not
// sign counts as no renewal, and once a lease has passed since the last
// one it honoured, it takes the key over; a delete counts as a release
// only with the signature of the holder it last honoured. A forged write
// neither hands it the host while the holder renews nor keeps it from a
// dead holder's host.
func (q *Queue) AcquireSignedLease(ctx context.Context, host, instance string, k MarkKey, standby func(holder string)) (*Lease, error) {
	return q.acquire(ctx, host, instance, k, nil, standby)
}

// AcquireOwnedLease is AcquireSignedLease for a worker whose host's
// takeovers are recorded in owners: each write that takes the key is
// sent only after the host's owner was read (TakenFrom), which its
// takeover is conditioned on, and the lease checks owners before its
// plain writes (CheckOwner). A read that fails ends the wait.
func (q *Queue) AcquireOwnedLease(ctx context.Context, host, instance string, k MarkKey, owners Owners, standby func(holder string)) (*Lease, error) {
	return q.acquire(ctx, host, instance, k, owners, standby)
}

// acquire is AcquireOwnedLease, with owners nil for AcquireSignedLease.
func (q *Queue) acquire(ctx context.Context, host, instance string, k MarkKey, owners Owners, standby func(holder string)) (*Lease, error) {
	key := "lease." + host
	// Each read and take sent again at once when a drop of the
	// connection ended it (dropKV): a worker taking its host as a
	// nats-server restarted (its start, the tenure after the restart)
	// waited out a lost one's 5 s, or failed (docs/decisions.md, hF24).
	kv := q.hostsOnDrop()
	seen := &leaseSeen{q: q, key: key, host: host, instance: instance, k: k}
	kn := q.knownLease(host)
	if k != nil {
		seen.signed, seen.counted = kn.learned.has(knowsSigned), kn.learned.has(knowsCounted)
	}
	seen.held = kn.learned.has(knowsHeld)
	// The worker could not read the host's owner before this wait: each
	// take reads it (readOwner), and an absent key found while it names
	// another instance is left to that one (held, below). For this wait
	// only.
	unread := kn.unread
	if unread {
		q.changeLease(host, func(kn *leaseKnown) { kn.unread = false })
		seen.held = seen.held || owners == nil
	}
	// This instance left its value on the key to the host's owner
	// (yieldToOwner): that value is the owner's to write over, not this
	// instance's lease left over.
	yielded := kn.yielded == instance
	var w *keyWatch
	watching := false
	every := q.opts.LeaseTTL / 4 // the periodic try
	freed := ""
	// When the watch last saw the holder renew: an interval on this
	// process's monotonic clock, which no step of the host's clock moves.
	var renewed time.Time
	markers, warned, deletedLogged, absentLogged := false, false, false, false
	var timed *leaseClock // the lease the wait is timed on; nil for periodic tries
	// The watch of the holder's process, which wakes the wait when it
	// exits (ExitWatchers).
	var exit holderExit
	defer exit.stop()
	// The conditioned takes of a key this standby is due (due, below)
	// that another writer's message beat, one after another; from
	// lostTakes on, the take is a plain put.
	lost := 0
	beaten := func() {
		lost++
		q.logger().Debug("a take of the host lease was beaten by another writer", "host", host, "instance", instance, "lost", lost)
	}
	// The host's owner, read before each write that takes the key
	// (readOwner): a plain put of another worker's may land over the
	// take, and the first of the two to take the host over from the
	// owner both read holds it (TakeHostFrom).
	var before HostOwner
	readOwner := func() error {
		if owners == nil {
			return nil
		}
		o, err := owners.HostOwner(ctx, host)
		if err != nil {
			return fmt.Errorf("acquire lease of host %s: read the host's owner before taking its lease: %w", host, err)
		}
		before = o
		return nil
	}
	// The probes of this process's contact with the server, for as long
	// as it waits: a lease that lapsed while the server answered nobody
	// is left to its holder (contact).
	probeEvery, slow := contactProbes(q.opts.LeaseTTL)
	pctx, stopProbes := context.WithCancel(ctx)
	probes := make(chan struct{})
	go func() {
		defer close(probes)
		q.probeContact(pctx, probeEvery, slow)
	}()
	defer func() {
		stopProbes()
		<-probes
	}()
	// watch starts the wait as a standby of holder: reported, and
	// watching from before the next try, so that a change made between
	// a try and the wait is not missed. Without a watch (w nil) the
	// tries are periodic.
	watch := func(holder string) error {
		if standby != nil {
			standby(holder)
		}
		watching = true
		var err error
		if w, err = q.watchKey(ctx, key, seen); err == nil {
			// Timed at once, the bucket's limits read beside the wait
			// (leaseClock), which turns to markers (below) if it has
			// them: read here, a read held up (its bound, 5 s) held up
			// the wait's start, and a holder that died then was taken
			// that much late (TestAHeldBucketReadDoesNotDelayTheWaitsStart).
			// Timed, a bucket with markers is waited on as one without:
			// a marker ends the wait as a lease timed from the renewal
			// does.
			timed, every = newLeaseClock(ctx, q, q.opts.LeaseTTL), retryEvery(q.opts.LeaseTTL)
			return nil
		}
		w = nil
		return ctx.Err()
	}
	defer func() {
		if w != nil {
			w.Stop()
		}
		if timed != nil {
			timed.stop()
		}
	}()
	for {
		if timed != nil && timed.marked() {
			// The bucket has expiry markers (an orderly's from before
			// hostsStream), as the read beside the wait says.
			timed.stop()
			timed, every, markers = nil, q.opts.LeaseTTL, true
		}
		if freed == "" && !watching && seen.held && q.goneUnseen(ctx, key, seen) == "absent" {
			// Absent, not released, and another instance held it lately:
			// left to that holder for a lease (goneUnseen), watched from
			// now, so that the lease a wait on this process's contact
			// with the server takes (awaitContact, below) counts too: a
			// worker started during a nats-server outage waits one lease
			// after the server answers, not two.
			renewed = time.Now()
			q.logAbsent(host, instance, &absentLogged)
			if err := watch(""); err != nil {
				return nil, err
			}
			freed = "tried"
		}
		if freed == "tried" && markers && !renewed.IsZero() && time.Since(renewed) < q.opts.LeaseTTL {
			e, err := kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) && !warned {
				warned = true
				q.logger().Warn("the host lease's key is gone though its holder renewed it within the lease: the hosts bucket was purged (a message with Nats-Rollup on it, which a worker's NATS credential can send); leaving the key to its holder",
					"host", host, "instance", instance, "renewed_ago", time.Since(renewed).Round(time.Millisecond))
			} else if err == nil {
				if holder, ok := seen.honours(e.Value(), e.Revision()); ok && holder == instance && !yielded {
					renewed = time.Time{} // this instance's own key: the take-back below
					continue
				}
			}
			if freed, err = waitFreed(ctx, w, every, &renewed, nil, nil); err != nil {
				return nil, err
			}
			if freed != "tried" {
				renewed = time.Time{} // released or expired: free indeed
			}
			continue
		}
		if freed == "deleted" {
			// Not released by its holder, which may be running an order:
			// it takes the key again at its next renewal (Renew). Taken
			// here only once a lease has passed since the holder was last
			// seen renewing it, as after its expiry.
			// Once a wait: another credential can store deletes on the
			// key as often as it likes (leaseSeen).
			if !deletedLogged {
				deletedLogged = true
				q.logger().Warn("the host lease's key was deleted without its holder releasing it (nats kv del?): leaving it to the holder, which takes it again at its next renewal; this standby takes the host only if it does not within the lease",
					"host", host, "instance", instance, "hint", HandsHint)
			}
			wait := q.opts.LeaseTTL
			if !renewed.IsZero() {
				wait = max(q.opts.LeaseTTL-time.Since(renewed), 0)
			}
			got, err := waitFreed(ctx, w, wait, &renewed, nil, nil)
			if err != nil {
				return nil, err
			}
			switch got {
			case "deleted":
				continue // deleted again: the wait again
			case "released", "expired":
				freed = got // its holder's release came during the wait
			}
		}
		lease := func(rev uint64, sent time.Time, freed string) *Lease {
			q.tookLease(host, instance, k)
			l := &Lease{q: q, key: key, host: host, instance: instance, k: k, rev: rev, freed: freed, written: sent,
				owners: owners, before: before, beforeRead: owners != nil}
			ttl := q.opts.LeaseTTL
			if timed != nil {
				ttl = timed.ttl()
			}
			l.SetTTL(ttl)
			return l
		}
		ttl := q.opts.LeaseTTL
		if timed != nil {
			ttl = timed.ttl()
		}
		// A key its holder released is free; any other is taken only
		// once the server has answered this process for a lease.
		if freed != "released" {
			if err := q.awaitContact(ctx, host, instance, ttl, slow, probeEvery); err != nil {
				return nil, err
			}
			// What the watch received meanwhile: a renewal says the
			// holder lives, whatever the key holds now; the wait is
			// timed from when the server stored it, aged on the
			// server's time as last read (hostsRead.serverNow), or
			// from now when none was read lately. Read here, a read
			// held up (its bound, 5 s) held the standby that long
			// past a holder that died during the wait on the contact
			// (TestAHeldBucketReadDoesNotDelayARenewalAfterASilence).
			switch got, stored := w.since(); got {
			case "renewed":
				renewed, lost = time.Now(), 0
				if now, ok := q.keptHosts().serverNow(); ok && !stored.IsZero() {
					renewed = renewed.Add(-min(max(now.Sub(stored), 0), ttl))
				}
				var err error
				if freed, err = waitFreed(ctx, w, every, &renewed, timed, exit.wake()); err != nil {
					return nil, err
				}
				continue
			case "released":
				freed = "released"
			}
		}
		// The try an exit seen woke is this one (holderExit).
		exit.tried()
		// due: its holder released the key, or a lease has passed since
		// the last renewal honoured; the key is this standby's to take.
		due := freed == "released" || !renewed.IsZero() && time.Since(renewed) >= ttl
		var rev uint64
		var err error
		sent := time.Now()
		gone := ""
		if freed != "released" && freed != "expired" && (renewed.IsZero() || time.Since(renewed) < ttl) {
			gone = q.goneUnseen(ctx, key, seen)
		}
		if gone == "value" {
			// Read as a Create that found the key taken would read it.
			err = jetstream.ErrKeyExists
		} else if gone != "" {
			// A delete (or marker), no release of its holder's, or an
			// absent key another instance held lately, found within a
			// lease of the last renewal honoured (or of now): left to
			// the holder for a lease, as a delete seen is, not taken,
			// which its Create would do. A standby starting while
			// another credential stored deletes on the key, or while a
			// server's clock step had removed it, took a live holder's
			// host.
			if renewed.IsZero() {
				renewed = time.Now()
			}
			if gone == "delete" {
				seen.forged(q.logger(), "(a delete)")
			} else {
				q.logAbsent(host, instance, &absentLogged)
			}
			err = jetstream.ErrKeyExists
		} else if due && lost >= lostTakes {
			if err := readOwner(); err != nil {
				return nil, err
			}
			if rev, err = kv.Put(ctx, key, leaseValue(key, instance, q.lastRevision(ctx, k, seen.floor, q.takeRead(seen)), k)); err == nil {
				q.logTakenByPut(host, instance, "this standby's conditioned takes", lost)
				return lease(rev, sent, freed), nil
			}
		} else {
			// A take whose answer a restart lost, sent again, finds
			// the key taken: its own (writeOnDrop).
			if err := readOwner(); err != nil {
				return nil, err
			}
			if unread && !seen.held && !due && before.Instance != "" && before.Instance != instance {
				// Owned by another instance, as the worker could not
				// read before the wait: an absent key may be its live
				// lease. Judged again as one another instance held.
				seen.held = true
				q.learnLease(host, knowsHeld)
				continue
			}
			rev, err = kv.Create(ctx, key, leaseValue(key, instance, q.lastRevision(ctx, k, seen.floor, q.takeRead(seen)), k))
		}
		if err == nil {
			return lease(rev, sent, freed), nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("acquire lease of host %s: %w", host, err)
		}
		// A key naming this very instance is its own lease, left over from
		// a tenure whose release did not reach the server (instances are
		// unique per process): take it back instead of waiting it out.
		// Not one left to the host's owner (yielded): waited for as a
		// holder's.
		// With a key, only a value it signed: the instance of a standby
		// is in the hosts listing, and a value naming it, forged over a
		// live holder's, handed it the host.
		e, err := kv.Get(ctx, key)
		holder, honoured := "", false
		if err == nil {
			holder, honoured = seen.honours(e.Value(), e.Revision())
		}
		switch {
		case honoured:
			lost = 0 // a holder's value, or a rival's that won: no forger's race
		case due && errors.Is(err, jetstream.ErrKeyNotFound):
			// Free at the Create's read, gone again at this one: another
			// writer's delete came in between.
			beaten()
		}
		if honoured && holder == instance && !yielded {
			if err := readOwner(); err != nil {
				return nil, err
			}
			sent := time.Now()
			if rev, err := kv.Update(ctx, key, leaseValue(key, instance, e.Revision(), k), e.Revision()); err == nil {
				return lease(rev, sent, ""), nil
			}
		}
		// A holder whose process has exited, as the host's owner records
		// it (its process on this machine's boot and in this pid
		// namespace, not running: a worker restarted where it died)
		// renews nothing: its key is taken at once, on the revision read,
		// not waited for until the server expires it, up to a lease and
		// a second later. Every worker SIGKILLed at once and started
		// again waited out its own previous process's lease
		// (TestFaultsFleet, docs/decisions.md, hE29). The take is
		// conditioned on the owner read after that answer (TakeHostFrom),
		// and any write on the key since the read beats it.
		if honoured && holder != instance && ownerExited(ctx, owners, host, holder) {
			if err := readOwner(); err != nil {
				return nil, err
			}
			if before.Instance == holder {
				sent := time.Now()
				if rev, err := kv.Update(ctx, key, leaseValue(key, instance, e.Revision(), k), e.Revision()); err == nil {
					q.logger().Info("took the host lease of a holder whose process has exited, before its expiry",
						"host", host, "instance", instance, "holder", holder)
					return lease(rev, sent, freed), nil // "expired" after a standby's wait
				}
			}
		}
		if honoured && holder != instance {
			// The holder's process watched from now on: its exit wakes
			// the wait for a try (holderExit).
			exit.watch(ctx, owners, host, holder)
		}
		switch {
		case err == nil && !honoured:
			// Not the holder's: no renewal. Taken over once a lease has
			// passed since the last one honoured, or, when none was
			// seen, since now (a holder not seen yet may have renewed
			// just before the value was written over its own: it takes
			// the key back at its next renewal, which the watch sees).
			seen.forged(q.logger(), holder)
			if renewed.IsZero() {
				renewed = time.Now()
			} else if time.Since(renewed) >= ttl {
				if err := readOwner(); err != nil {
					return nil, err
				}
				sent := time.Now()
				var rev uint64
				var err error
				if lost >= lostTakes {
					rev, err = kv.Put(ctx, key, leaseValue(key, instance, max(e.Revision(), q.lastRevision(ctx, k, seen.floor, q.takeRead(seen))), k))
				} else {
					rev, err = kv.Update(ctx, key, leaseValue(key, instance, e.Revision(), k), e.Revision())
				}
				if err == nil {
					q.logger().Error("took the host lease over a value not written with this host's NATS credential (another credential wrote it), a lease after its holder last renewed it",
						"host", host, "instance", instance, "written_as", holder)
					if lost >= lostTakes {
						q.logTakenByPut(host, instance, "this standby's conditioned takes", lost)
					}
					return lease(rev, sent, "expired"), nil
				}
				if raced(err) {
					beaten()
				}
				freed = "tried"
				continue // changed meanwhile: judged again, at once
			}
		case err == nil && timed != nil:
			var read time.Duration
			renewed, read = q.storedAgo(ctx, e, renewed, timed.ttl(), slow)
			if read > 0 {
				timed.readNow(read)
			} else {
				timed.renewal() // the lease read beside the tries, when due
			}
			every = retryEvery(timed.ttl())
		}
		if !watching {
			if err := watch(holder); err != nil {
				return nil, err
			}
			if w != nil {
				freed = "tried"
				continue
			}
		}
		if freed, err = waitFreed(ctx, w, every, &renewed, timed, exit.wake()); err != nil {
			return nil, err
		}
	}
}

// lostTakes is how many conditioned takes of a lease key its standby is
// due (released by its holder, or a lease past the last renewal it
// honoured) another writer may beat one after another before the
// standby takes the key with a plain put. A conditioned write names the
// key's last revision as its writer read it, and loses to any message
// stored on the key in the round trip since: another credential writing
// the key more often than that round trip (the reply-subject route,
// leaseSeen) won every one, and the standby of a dead holder never took
// its host for as long as it wrote (TestFaultsNATSFrozenSigned: both of
// h1's workers, on a loaded machine, 20 s until a freeze ended the
// writes' rhythm; TestStandbyTakesTheHostFromAForgerFasterThanItsRoundTrip).
// Honest rivals lose at most once each: the value that beat them is one
// they honour, and that resets the count.
const lostTakes = 3

// logTakenByPut says that a worker took its host's lease with a plain
// put after lost conditioned writes, beaten, whose (a standby's takes,
// or a holder's take-backs past its lease, retake).
func (q *Queue) logTakenByPut(host, instance, beaten string, lost int) {
	q.logger().Error("took the host lease with a plain write: another NATS credential's writes on the key beat "+beaten+", one after another (it writes more often than this worker's round trip to the server)",
		"host", host, "instance", instance, "lost_takes", lost)
}

// logAbsent says, once a wait (logged), that the wait leaves an absent
// lease key to the holder that may still hold it (goneUnseen).
func (q *Queue) logAbsent(host, instance string, logged *bool) {
	if *logged {
		return
	}
	*logged = true
	q.logger().Warn("the host lease's key is absent, not released, and another worker held it lately (a NATS server's clock stepped forward, the hosts bucket made again or purged?): leaving it to that holder, which puts it back at its next renewal; this standby takes the host only if no renewal comes within the lease",
		"host", host, "instance", instance, "lease", q.opts.LeaseTTL)
}

// retryEvery is how often a standby tries a lease key still there at the
// end of the lease, ttl: the server removes an expired key up to about a
// second late (its age checks are at least 250 ms apart), a try costs
// three requests, and a renewal seen meanwhile puts the next try a lease
// later.
func retryEvery(ttl time.Duration) time.Duration {
	return max(min(ttl/16, 100*time.Millisecond), 10*time.Millisecond)
}

// storedAgo returns the time on this process's monotonic clock that is
// as long ago as the server stored e, judged on the server's clock, and
// the bucket's TTL, the lease, when it read it now (an API may have
// changed it since this queue was bound; 0 when it read none); the time
// is at most a lease ago.
//
// The server's time is estimated from the bucket's stream as last read
// (hostsRead.serverNow: a standby reads it beside its wait every half
// lease), with the lease known (the wait's clock reads it with it). Only
// when nothing was read lately is the bucket's state read here, within
// bound; unread, e counts as stored when the wait last saw its holder
// renew (renewed, which the server stored before), or now if it saw
// none, under the lease known. Read without a bound, a read held up
// (its request's, 5 s: a JetStream API slow to give the stream's info)
// kept a standby from a dead holder's host that long past the lease, the
// key found still there at the lease's end (the server removes an
// expired key up to a second late); read within it at every try, each
// try waited out the bound until the server removed the key
// (TestAHeldBucketReadDoesNotDelayARenewalAfterASilence). Timed on this
// process's clock instead, a clock ahead of the server's would age a
// live holder's last renewal past the lease, and the standby would take
// its key (TestAHeldBucketTTLReadDoesNotKeepTheStandbyFromADeadHoldersHost).
func (q *Queue) storedAgo(ctx context.Context, e jetstream.KeyValueEntry, renewed time.Time, known, bound time.Duration) (time.Time, time.Duration) {
	now, ok := q.keptHosts().serverNow()
	ttl, read := known, time.Duration(0)
	if !ok {
		rctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		st, err := q.readHosts(rctx)
		if err != nil {
			if renewed.IsZero() {
				renewed = time.Now()
			}
			return renewed, 0
		}
		now = q.now()
		if info := st.CachedInfo(); !info.TimeStamp.IsZero() {
			now = info.TimeStamp
		}
		if t := st.CachedInfo().Config.MaxAge; t > 0 {
			ttl, read = t, t
		}
	}
	age := min(max(now.Sub(e.Created()), 0), ttl)
	return time.Now().Add(-age), read
}

// leaseClock is the lease a standby times its tries on: the hosts
// bucket's TTL, read again at a renewal once half a lease (at most 10 s)
// has passed since it was last read. An API that shortens
// nats.lease_ttl shortens every lease: read only when a try failed,
// which a live holder's renewals never let happen, a standby kept the
// old lease for as long as it waited, and took a dead holder's host that
// much later.
//
// The read runs beside the wait, one at a time, and its answer times
// the next deadline: read in the wait, a read held up (its request's
// bound, 5 s: a JetStream API slow to give the stream's info) held up
// the watch, whose renewals, read late, each restarted the lease from
// their reading, and each of which was due a read again: a dead
// holder's host was not taken for as long as the reads were held
// (TestAHeldBucketTTLReadDoesNotKeepTheStandbyFromADeadHoldersHost).
type leaseClock struct {
	q      *Queue
	ctx    context.Context // the reads'; ended by stop
	cancel context.CancelFunc
	reads  sync.WaitGroup
	mu     sync.Mutex
	lease  time.Duration
	read   time.Time // when the last read was sent; zero: none yet
	// reading: a read is on its way, and no other is sent.
	reading bool
	// markers: the last read found the bucket with expiry markers.
	markers bool
}

// newLeaseClock times a wait on lease, and reads the bucket at once,
// beside the wait: its TTL, and whether it has expiry markers (marked).
func newLeaseClock(ctx context.Context, q *Queue, lease time.Duration) *leaseClock {
	c := &leaseClock{q: q, lease: lease}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.renewal()
	return c
}

// renewal has the bucket's TTL read again, beside the wait, when it is
// due.
func (c *leaseClock) renewal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reading || !c.read.IsZero() && time.Since(c.read) < min(c.lease/2, 10*time.Second) {
		return
	}
	c.read, c.reading = time.Now(), true
	c.reads.Add(1)
	go func() {
		defer c.reads.Done()
		st, err := c.q.readHosts(c.ctx)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.reading = false
		if err != nil {
			return
		}
		if ttl := st.CachedInfo().Config.MaxAge; ttl > 0 {
			c.lease = ttl
		}
		c.markers = st.CachedInfo().Config.SubjectDeleteMarkerTTL > 0
	}()
}

// marked reports whether the last read found the bucket with expiry
// markers.
func (c *leaseClock) marked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.markers
}

// pending reports whether a read is on its way.
func (c *leaseClock) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reading
}

// ttl is the lease as last read.
func (c *leaseClock) ttl() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease
}

// readNow records ttl, read just now by the caller.
func (c *leaseClock) readNow(ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lease, c.read = ttl, time.Now()
}

// stop ends the read on its way, if any, and waits for it.
func (c *leaseClock) stop() {
	c.cancel()
	c.reads.Wait()
}

// waitFreed waits until the lease key that w watches (nil: none) is
// deleted or marked expired, or until wait has passed, and says which:
// "released" (deleted by its holder's Release), "deleted" (deleted
// otherwise: by hand, or by a holder from before ReleasedHeader),
// "expired" or "tried". It sets *renewed to the time of each put it sees
// (the holder's renewal). Timed on a lease (clock), the wait
// lasts until that lease has passed since *renewed, if that is later,
// and its end is "expired": the holder has not renewed within a lease.
// Once wake is closed (nil: never), the wait ends "tried": the holder's
// process has exited (holderExit).
func waitFreed(ctx context.Context, w *keyWatch, wait time.Duration, renewed *time.Time, clock *leaseClock, wake <-chan struct{}) (string, error) {
	if wake != nil {
		wctx, woken := context.WithCancel(ctx)
		quit := make(chan struct{})
		defer close(quit)
		go func() {
			select {
			case <-wake:
				woken()
			case <-quit:
				woken()
			}
		}()
		got, err := waitFreed(wctx, w, wait, renewed, clock, nil)
		if err != nil && ctx.Err() == nil {
			return "tried", nil // woken
		}
		return got, err
	}
	at := time.Now().Add(wait) // the periodic try, from the start or the last renewal
	ends := func() time.Time {
		if clock != nil && !renewed.IsZero() && renewed.Add(clock.ttl()).After(at) {
			return renewed.Add(clock.ttl())
		}
		return at
	}
	deadline := ends()
	for w != nil {
		if clock != nil && clock.marked() {
			return "tried", nil // waited on as a bucket with markers (AcquireLease)
		}
		// While a read of the TTL is on its way (beside the wait), the
		// deadline is timed again every retry: a lease an API shortened
		// ends the wait when the read says, not at the lease read before.
		until := deadline
		if clock != nil && clock.pending() {
			if next := time.Now().Add(retryEvery(clock.ttl())); next.Before(until) {
				until = next
			}
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		op, released, err := w.next(wctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && until.Before(deadline) && errors.Is(err, context.DeadlineExceeded) {
				deadline = ends()
				continue
			}
			break // the wait is over, or the watch failed: the periodic try
		}
		// A put is the holder's renewal: the key is not free.
		switch op {
		case jetstream.KeyValuePut:
			*renewed = time.Now()
			if clock != nil {
				clock.renewal()
				at = time.Now().Add(wait)
				deadline = ends()
			}
		case jetstream.KeyValueDelete:
			if !released {
				return "deleted", nil
			}
			return "released", nil
		case jetstream.KeyValuePurge:
			// The server's marker of an expiry comes a lease after the
			// holder's last renewal. One within the lease is a message
			// any connection can have stored on the key with that
			// header (the reply-subject route, leaseSeen): taken as a
			// delete by someone else, which leaves the key to a live
			// holder for a lease.
			lease := w.q.opts.LeaseTTL
			if clock != nil {
				lease = clock.ttl()
			}
			if !renewed.IsZero() && time.Since(*renewed) < lease {
				return "deleted", nil
			}
			return "expired", nil
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-t.C:
	}
	if clock != nil && !renewed.IsZero() {
		return "expired", nil
	}
	return "tried", nil
}

// keyWatch follows the changes of one key of the hosts bucket made after
// it started, through a push consumer of its own over a plain
// subscription, not nats.go's KV watch (see beats): on serve's connection,
// which carries its API, a standby of serve's host published the empty
// answer an entry of the lease key shaped as the server's heartbeat
// named, as the API, where any other worker of that host chose (the
// orders stream's purge).
type keyWatch struct {
	q    *Queue
	sub  *nats.Subscription
	name string     // the consumer's
	seen *leaseSeen // what judges the values and deletes it sees
}

// watchKey starts following key's changes, judged by seen.
func (q *Queue) watchKey(ctx context.Context, key string, seen *leaseSeen) (*keyWatch, error) {
	inbox := q.nc.NewInbox()
	sub, err := q.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	c, err := q.js.CreatePushConsumer(ctx, "KV_"+HostsBucket, jetstream.ConsumerConfig{
		DeliverSubject:    inbox,
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubject:     "$KV." + HostsBucket + "." + key,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return &keyWatch{q: q, sub: sub, name: c.CachedInfo().Name, seen: seen}, nil
}

// next waits for the key's next change and returns its operation, and
// for a delete whether its holder released the key (Release). A value
// its holder did not write (leaseSeen) is no change: it is skipped.
func (w *keyWatch) next(ctx context.Context) (op jetstream.KeyValueOp, released bool, err error) {
	op, released, _, err = w.judged(func() (*nats.Msg, error) { return w.sub.NextMsgWithContext(ctx) })
	return op, released, err
}

// since returns what the watch has received and not yet handed over,
// without waiting: "renewed" when the last change of it that counts is
// a renewal of its holder's, with when the server stored it, "released"
// when it is its release, "" when none counts. A standby that waited on its contact with the
// server (awaitContact) read nothing meanwhile, while the holder
// renewed: timed from the renewal it read before the wait, a forged
// value (or a forged delete) found at the try that followed was taken
// over, a live holder's host taken
// (TestSignedHolderKeepsItsLeaseFromAForgerAfterASilence).
func (w *keyWatch) since() (got string, stored time.Time) {
	for w != nil {
		op, released, m, err := w.judged(func() (*nats.Msg, error) { return w.sub.NextMsg(0) })
		switch {
		case err != nil:
			return got, stored
		case op == jetstream.KeyValuePut:
			got, stored = "renewed", time.Time{}
			if meta, err := m.Metadata(); err == nil {
				stored = meta.Timestamp
			}
		case released:
			got = "released"
		}
	}
	return got, stored
}

// judged returns the next change read, judged (next).
func (w *keyWatch) judged(read func() (*nats.Msg, error)) (op jetstream.KeyValueOp, released bool, m *nats.Msg, err error) {
	for {
		m, err := read()
		if err != nil {
			return 0, false, nil, err
		}
		if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
			continue // not a stored message: the server sends none other here
		}
		switch {
		case m.Header.Get("KV-Operation") == "DEL":
			var rev uint64
			if meta, err := m.Metadata(); err == nil {
				rev = meta.Sequence.Stream
			}
			return jetstream.KeyValueDelete, w.seen.released(m, rev), m, nil
		case m.Header.Get("KV-Operation") == "PURGE":
			return jetstream.KeyValuePurge, false, m, nil
		}
		switch m.Header.Get(jetstream.MarkerReasonHeader) {
		case "MaxAge", "Purge":
			return jetstream.KeyValuePurge, false, m, nil
		case "Remove":
			return jetstream.KeyValueDelete, false, m, nil
		}
		var rev uint64
		if meta, err := m.Metadata(); err == nil {
			rev = meta.Sequence.Stream
		}
		if holder, ok := w.seen.honours(m.Data, rev); !ok {
			w.seen.forged(w.q.logger(), holder)
			continue
		}
		return jetstream.KeyValuePut, false, m, nil
	}
}

// Stop ends the watch and deletes its consumer (best effort: its
// InactiveThreshold removes one whose delete is lost).
func (w *keyWatch) Stop() {
	_ = w.sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = w.q.js.DeleteConsumer(ctx, "KV_"+HostsBucket, w.name)
}

// Freed says how a lease taken after a wait was found free: "released"
// by its holder, "deleted" (by someone else, and not taken again by its
// holder within the lease), "expired" (the server's marker of its
// expiry), or
// "tried" (found free at a try: the periodic one, or the one once the
// watch is on); "" for one taken at once.
func (l *Lease) Freed() string { return l.freed }

// OnLapse has Renew call f as soon as it finds the lease key gone or
// naming another worker, before it tries to take the key again: the
// holder stops claiming at once, not one round trip later, and goes on
// if Renew takes the key again. Set before the first renewal.
func (l *Lease) OnLapse(f func()) { l.lapsed = f }

// Renew extends the lease. It fails with ErrLeaseLost when the lease expired
// and someone else holds the host now; retaken says it had expired (a pause
// or a partition longer than the TTL) and, still free, was taken again.
// When the last renewal's answer was lost (a NATS restart, a timeout) the
// update may have been applied anyway, leaving this lease with a stale
// revision: the key is read back, and a key that still names this instance
// is this lease, not a rival's.
//
// A key found gone, or naming another worker in a value the host's key
// did not sign (leaseSeen), while this lease's last write is less than a
// lease old, is taken back at once with a plain put, and a value not
// signed with no lapse: nobody could have taken the key legitimately,
// since it cannot have expired, a standby takes a deleted key only a
// lease after its holder's last renewal, and one takes a value it cannot
// check only a lease after its holder's last renewal too. Another
// credential wrote it (the reply-subject route), and a put, not a write
// on the revision read, because that credential can write the key as
// often as it likes: a holder racing it lost its writes, its lease in
// doubt, its claims paused. Past the lease the key may have expired, and
// a standby may hold it: a value the host's key signed for another
// instance is lost, as before; one it did not sign is taken back as a
// lapse (retaken), on the revision read, as a standby that has seen a
// signed value takes it over (an older worker, or one on another seed,
// that took the expired key loses it). Within the lease, a value the
// host's key signed for another instance was put over this lease by a
// worker that could not yet see it (keepOwned): the host's owner
// (CheckOwner) says which of the two keeps it.
func (l *Lease) Renew(ctx context.Context) (retaken bool, err error) {
	if l.unconfirmed {
		// A plain write whose confirmation was not answered: nothing
		// else until it is (putAsOwner).
		if err := l.confirm(ctx); err != nil {
			return false, fmt.Errorf("renew lease: %w", err)
		}
	}
	sent := time.Now()
	rev, err := l.kv().Update(ctx, l.key, l.value(l.rev), l.rev)
	if err == nil {
		l.wrote(rev, sent)
		l.lost = 0
		return false, nil
	}
	within := l.within()
	e, gerr := l.kv().Get(ctx, l.key)
	gone := errors.Is(gerr, jetstream.ErrKeyNotFound)
	holder, trust := "", leaseSigned
	if gerr == nil {
		var r leaseRead
		r, trust = trustLease(l.key, e.Value(), l.k, sinceRev(l.rev, e.Revision()), true)
		holder = r.instance
	}
	forged := within && gerr == nil && trust != leaseSigned
	// Past the lease, a value the host's key did not sign, naming
	// another worker, is no rival's either, as it is none for a standby
	// that has seen a signed value (leaseSeen): the key lapsed, and
	// another credential wrote it.
	unsigned := !within && l.k != nil && gerr == nil && trust != leaseSigned && holder != l.instance
	if l.lapsed != nil && !forged && (gone || gerr == nil && holder != l.instance) {
		l.lapsed()
	}
	switch {
	case gone && within:
		// Deleted under a live lease: by hand, or stored by another
		// credential. A standby leaves it to this holder for a lease.
		// Not a lapse: retaken would say it had expired.
		l.q.logger().Warn("the host lease's key was deleted while this worker held it (by hand, or stored by another NATS credential): taken back",
			"host", l.host, "instance", l.instance)
		sent := time.Now()
		rev, perr := l.kv().Put(ctx, l.key, l.value(l.q.lastRevision(ctx, l.k, l.rev, 0)))
		if perr != nil {
			return false, fmt.Errorf("renew lease: take the deleted lease again: %w", perr)
		}
		l.wrote(rev, sent)
		return false, nil
	case gone:
		// The key expired or was deleted (a long pause): take it again if
		// nobody else did meanwhile.
		sent := time.Now()
		rev, cerr := l.retake(ctx, 0)
		if cerr == nil {
			l.wrote(rev, sent)
			return true, nil
		}
		if errors.Is(cerr, jetstream.ErrKeyExists) {
			return l.takenWhileFree(ctx, err)
		}
		// Unanswered (NATS away since the key was found gone): the
		// lease stays in doubt, and the next renewal tries again.
		return false, fmt.Errorf("renew lease: take the lapsed lease again (its key was gone): %w", cerr)
	case gerr != nil:
		return false, fmt.Errorf("renew lease: %w (then: %v)", err, gerr)
	case forged:
		if trust == leaseReplayed {
			holder += " (a copy of an earlier value its host's key signed, written again)"
		}
		l.q.logger().Error("the host lease was written by another NATS credential than this host's, while this worker held it: taken back",
			"host", l.host, "instance", l.instance, "written_as", holder)
		sent := time.Now()
		rev, perr := l.kv().Put(ctx, l.key, l.value(max(l.rev, e.Revision())))
		if perr != nil {
			return false, fmt.Errorf("renew lease: take the lease back: %w", perr)
		}
		l.wrote(rev, sent)
		return false, nil
	case unsigned:
		// Taken back on the revision read, not with a put: past the
		// lease a standby on the host's key may take it meanwhile, and
		// its signed value is a lost lease. A frozen nats-server
		// expires every lease at its thaw, and a forger writing then
		// made the live holder end its tenure; its standby, a lease
		// later, took the host and interrupted the order it ran
		// (TestSignedHolderKeepsItsLeaseFromAForgerAfterASilence).
		sent := time.Now()
		rev, uerr := l.retake(ctx, e.Revision())
		if uerr != nil {
			return false, fmt.Errorf("renew lease: take the lapsed lease back from a value not written with this host's NATS credential: %w", uerr)
		}
		l.q.logger().Error("the host lease had lapsed and was written by another NATS credential than this host's: taken back",
			"host", l.host, "instance", l.instance, "written_as", holder)
		l.wrote(rev, sent)
		return true, nil
	case holder != l.instance && within && l.owners != nil:
		// No take of a live lease is conditioned on its revision: put.
		return l.keepOwned(ctx, e.Revision(), holder)
	case holder != l.instance:
		return false, fmt.Errorf("%w: now held by %s", ErrLeaseLost, holder)
	}
	sent = time.Now()
	rev, err = l.kv().Update(ctx, l.key, l.value(e.Revision()), e.Revision())
	if err != nil {
		return false, fmt.Errorf("renew lease: %w", err)
	}
	l.wrote(rev, sent)
	return false, nil
}

// within reports whether this lease, signed, cannot have expired: its
// last write is less than a lease old, the bucket's TTL as last read
// (SetTTL; an API may have shortened it). Without a key, or without a
// TTL, it says no: nothing is judged a forgery.
//
// It reads nothing: the bucket's TTL read here, in the renewal that had
// just failed, was held up by a JetStream API slow to give the stream's
// info for its request's bound (5 s), and a lease of 2 s lapsed under
// its live holder before it could judge the key it found
// (TestAHeldBucketTTLReadDoesNotLapseALeaseAfterAFailedRenewal). A TTL
// the API shortened since the last read counts from the holder's next
// read (every minute, worker's beat), as its renewals' pace does.
func (l *Lease) within() bool {
	if l.k == nil {
		return false
	}
	ttl := time.Duration(l.ttl.Load())
	return ttl > 0 && time.Since(l.written) < ttl
}

// SetTTL tells the lease the hosts bucket's TTL as its holder last read
// it (the holder reads it beside its renewals); within judges by it. A
// TTL of 0 (unread, or no expiry) is ignored.
func (l *Lease) SetTTL(ttl time.Duration) {
	if ttl > 0 {
		l.ttl.Store(int64(ttl))
	}
}

// sinceRev is the floor a holder whose last write was revision own
// judges a value stored as revision rev by (trustLease): own, unless
// rev is below it, which only a bucket made again since can store.
func sinceRev(own, rev uint64) uint64 {
	if rev < own {
		return 0
	}
	return own
}

// value is what this lease writes to its key, written after revision
// after of it (leaseValue).
func (l *Lease) value(after uint64) []byte { return leaseValue(l.key, l.instance, after, l.k) }

// kv is the hosts bucket as the holder reads and writes it: a request a
// drop of the connection ended is sent again at once (dropKV).
func (l *Lease) kv() dropKV { return l.q.hostsOnDrop() }

// lastRevision is the revision a take of a lease key, signed with k, is
// written after: the hosts bucket's last sequence, read within bound (0:
// not read), or as last read (hostsRead) when it was not, and at least
// known, a revision of the key the writer honoured or wrote; 0 without a
// key, which writes no revision. A holder past its lease reads a take
// naming less than its own last renewal as a copy written again
// (trustLease), and so does a standby that honoured that renewal.
//
// A standby that honoured a renewal of the key knows it (its floor,
// from its watch or its reads) and reads nothing: read before every
// signed take, a read held up (its request's bound, 5 s) held up the
// take of a dead holder's host by as much. One that honoured none (the
// key free when its wait began) reads the last sequence, within half a
// lease: the last read may be older than the last holder's renewals. A
// holder within its lease names its own last write (nobody else can
// have taken the key): read there, the read held up its take-back of a
// deleted key, and the standby took the live holder's host
// (TestAHeldBucketReadDoesNotLapseALeaseWhoseKeyWasDeleted); past it,
// it reads within half a lease too.
func (q *Queue) lastRevision(ctx context.Context, k MarkKey, known uint64, bound time.Duration) uint64 {
	if k == nil {
		return 0
	}
	if bound > 0 {
		rctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		_, _ = q.readHosts(rctx) // unread within it: as last read
	}
	return max(known, q.keptHosts().lastSeq())
}

// takeRead is the bound of lastRevision's read before a take by a
// standby that has seen what it has seen: none once it honoured a
// counted renewal of the key (its floor), half a lease otherwise.
func (q *Queue) takeRead(seen *leaseSeen) time.Duration {
	if seen.floor > 0 {
		return 0
	}
	_, slow := contactProbes(q.opts.LeaseTTL)
	return slow
}

// wrote records a write of the key that the server took, as revision
// rev, sent at sent.
func (l *Lease) wrote(rev uint64, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev, l.written = rev, sent
}

// renewedRev is the key's revision as of this lease's last write, for
// Beat, which runs beside Renew.
func (l *Lease) renewedRev() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev
}

// Written is when the last write of the lease key that the server took
// (its take, a renewal) was sent, on this process's monotonic clock: the
// server stored it after that, so the key lasts until at least Written
// plus the lease, whatever this process did meanwhile. Read it from the
// goroutine that renews.
func (l *Lease) Written() time.Time { return l.written }

// Release gives the host up, so a standby can take over at once. The
// key's delete is kv.Delete's message (KV-Operation: DEL, on the lease's
// revision) with ReleasedHeader naming the holder: a standby takes over
// at once only after a delete that says so (waitFreed). A delete without
// it is someone else's (`nats kv del orderly_hosts lease.<host>` by
// hand) while the holder may still run an order: the standby that took
// over at once killed that order's processes and ended it interrupted,
// with the holder alive. One message, not a value written before the
// delete: the bucket keeps one message per key, and a delete stored
// before the watch delivered the value took it away unseen.
//
// A signed lease whose key another credential wrote since its last
// renewal (Renew) is released over that value, on the revision read: the
// standby would otherwise wait out a lease. One whose host another
// instance took over after this one is not released (yieldToOwner).
func (l *Lease) Release(ctx context.Context) error {
	if l.yieldToOwner(ctx) {
		return nil
	}
	rev := l.rev
	for try := 1; ; try++ {
		m := nats.NewMsg("$KV." + HostsBucket + "." + l.key)
		m.Header.Set("KV-Operation", "DEL")
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
		m.Header.Set(ReleasedHeader, l.instance)
		if l.k != nil {
			m.Header.Set(ReleaseSignatureHeader, l.k.signLease(l.key, "released", l.instance))
			after := strconv.FormatUint(rev, 10)
			m.Header.Set(ReleasedAfterHeader, after+" "+l.k.signLease(l.key, "released", l.instance+"\n"+after))
		}
		// Sent again when a drop ends it: a copy sent after the first
		// was stored is refused (the delete moved the key past rev),
		// and is the release done when the key's last message is this
		// delete. A rival's take in between refuses it too, and is
		// judged below: no copy deletes a key written since rev.
		err := l.q.sendOnDrop(ctx, func(ctx context.Context) error {
			_, err := l.q.js.PublishMsg(ctx, m)
			return err
		}, func(ctx context.Context) bool { return l.releasedBy(ctx, m.Header) })
		if err == nil {
			return nil
		}
		if try == 3 || !raced(err) || !l.within() {
			return fmt.Errorf("release lease of host %s: %w", l.host, err)
		}
		e, gerr := l.kv().Get(ctx, l.key)
		if gerr != nil {
			return fmt.Errorf("release lease of host %s: %w (then: %v)", l.host, err, gerr)
		}
		if r, t := trustLease(l.key, e.Value(), l.k, sinceRev(l.rev, e.Revision()), true); t == leaseSigned && r.instance != l.instance {
			return fmt.Errorf("release lease of host %s: %w (held by %s)", l.host, err, r.instance)
		}
		rev = e.Revision()
	}
}

// releasedBy reports whether the lease key's last message is the
// release whose headers are h (Release): its holder, and the revision
// it was released after with its signature, name this lease's release
// and nobody else's.
func (l *Lease) releasedBy(ctx context.Context, h nats.Header) bool {
	m, _, err := l.q.lastMessageOf(ctx, l.key)
	return err == nil && m.Header.Get("KV-Operation") == "DEL" &&
		m.Header.Get(ReleasedHeader) == h.Get(ReleasedHeader) && m.Header.Get(ReleasedAfterHeader) == h.Get(ReleasedAfterHeader)
}

// lastMessageOf reads the last message stored on key of the hosts
// bucket, a delete's headers included, sent again at once when a drop
// of the connection ended the read (RetryOnDrop), and returns it with
// the bucket's stream as last read (hostsRead; read now only when it
// never was). The stream's info read for each look held up a standby's
// tries (goneUnseen) by its bound, 5 s, when the JetStream API was slow
// to give it (TestAHeldBucketReadDoesNotDelayTheWaitsStart).
func (q *Queue) lastMessageOf(ctx context.Context, key string) (m *jetstream.RawStreamMsg, st jetstream.Stream, err error) {
	if st, err = q.keptHostsStream(ctx); err != nil {
		return nil, nil, err
	}
	err = q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		m, err = st.GetLastMsgForSubject(ctx, "$KV."+HostsBucket+"."+key)
		return err
	})
	return m, st, err
}

// raced reports whether a write on a key's revision failed because the
// key was written since.
func raced(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// ReleasedHeader names the worker instance that released a lease, on
// the lease key's delete (Release).
const ReleasedHeader = "Orderly-Released-By"

// Beat records info as the heartbeat of the host this lease holds, unless
// another worker has written it since this lease was last renewed.
//
// A holder frozen (SIGSTOP, a VM paused) between a renewal and its
// heartbeat, or with its heartbeat in flight, is thawed after a standby
// has taken the host over: its heartbeat, written unconditionally, put
// the former holder's instance back as the host's for a heartbeat, and
// the hosts listing said the wrong worker served it. So the write is a
// compare-and-set on the entry's revision: on this lease's last
// heartbeat, or, when that fails (the first heartbeat of a tenure, an
// entry expired or replaced since), on the entry as read, which must be
// this worker's, or older than the lease's last renewal (a predecessor's:
// the bucket's revisions are one sequence); with no entry, the lease key
// must still name this worker. Refused, the heartbeat is skipped; the
// next renewal says whether the lease is still held.
func (l *Lease) Beat(ctx context.Context, info HostInfo) error {
	key := "info." + l.host
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if l.beat != 0 {
		if rev, err := l.kv().Update(ctx, key, b, l.beat); err == nil {
			l.beat = rev
			return nil
		}
		l.beat = 0
	}
	// The entry read may change before the write that names its
	// revision: the predecessor's last heartbeat, written just after its
	// last renewal, expires a moment after the lease a standby has just
	// taken, and the server's removal of it between the read and the
	// write made the write fail (key revision mismatch) with nobody else
	// writing. The entry is read and judged again; a rival's entry is
	// refused by the judgement, not by the failed write.
	var rev uint64
	for try := 1; ; try++ {
		rev, err = l.judgeAndBeat(ctx, key, b)
		raced := errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
		if !raced || try == 3 || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, ErrNotHolder) {
		return err
	}
	if err != nil {
		return fmt.Errorf("heartbeat of host %s: %w", l.host, err)
	}
	l.beat = rev
	return nil
}

// judgeAndBeat writes b as key's heartbeat over the entry it reads, if
// that entry lets this lease write it (Beat).
func (l *Lease) judgeAndBeat(ctx context.Context, key string, b []byte) (uint64, error) {
	e, err := l.kv().Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// No entry to judge by (the tenure's first heartbeat, or this
		// worker's own expired while it was frozen past its lease):
		// the lease must still be this worker's, or a new entry would
		// show the host online under a worker that no longer holds it.
		holder, herr := l.q.LeaseHolder(ctx, l.host)
		if herr != nil {
			return 0, herr
		}
		if holder != l.instance {
			return 0, fmt.Errorf("heartbeat of host %s not written: %w (held by %q)", l.host, ErrNotHolder, holder)
		}
		return l.kv().Create(ctx, key, b)
	case err != nil:
		return 0, err
	}
	var h HostInfo
	if json.Unmarshal(e.Value(), &h) == nil && h.Instance != l.instance && e.Revision() > l.renewedRev() {
		return 0, fmt.Errorf("heartbeat of host %s not written: %w: %s wrote it after this worker last renewed the lease", l.host, ErrNotHolder, h.Instance)
	}
	return l.kv().Update(ctx, key, b, e.Revision())
}

// Offline removes the heartbeat this lease last wrote, on a clean stop,
// instead of letting it expire; a heartbeat another worker wrote since
// (the host's new holder, when this one was frozen past its lease) stays.
func (l *Lease) Offline(ctx context.Context) error {
	if l.beat == 0 {
		return nil
	}
	return l.kv().Delete(ctx, "info."+l.host, jetstream.LastRevision(l.beat))
}

// Offline removes the host's heartbeat at once, whoever wrote it; the
// worker that holds the host removes its own with Lease.Offline.
func (q *Queue) Offline(ctx context.Context, host string) error {
	return q.hostsOnDrop().Delete(ctx, "info."+host)
}

// LeaseHolder returns the instance that holds host's lease, "" when
// nobody does. A worker that died holds it until the key expires. The
// value's signature is left out: shown, it could be copied onto the key.
func (q *Queue) LeaseHolder(ctx context.Context, host string) (string, error) {
	e, err := q.hostsOnDrop().Get(ctx, "lease."+host)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the lease of host %s: %w", host, err)
	}
	return parseLease(e.Value()).instance, nil
}

// Forget removes what NATS keeps for a host that is gone for good: its
// durable consumer on the orders stream and its heartbeat, lease and
// standby keys.
// The caller has checked that no worker serves it, holds its lease or
// stands by for it, and that none of its orders may still run; the messages of its ended orders go with the
// periodic drop of unserved hosts' ended orders. A worker that starts for
// the host later sets all of it up again.
func (q *Queue) Forget(ctx context.Context, host string) error {
	err := q.js.DeleteConsumer(ctx, OrdersStream, ConsumerName(host))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete the consumer of host %s: %w", host, err)
	}
	// Purged through the stream, not kv.Purge: that is a message with
	// Nats-Rollup on it, which the bucket refuses (hostsStream).
	st, err := q.js.Stream(ctx, "KV_"+HostsBucket)
	if err != nil {
		return fmt.Errorf("forget host %s: %w", host, err)
	}
	for _, key := range []string{"info." + host, "lease." + host, "standby." + host} {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+HostsBucket+"."+key)); err != nil {
			return fmt.Errorf("forget host %s: %w", host, err)
		}
	}
	return nil
}
