package queue

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishTries bounds how many times Publish sends an order's message
// when the connection drops while it waits for the PubAck: the first
// send and two more, all within the one publishAckWait.
const publishTries = 3

// drops tells a request in flight that the queue's connection dropped
// under it. A request written in the instant after the server went away
// and before nats.go read its end is lost: nats.go reconnects but never
// sends it again (it resends only what was written once it saw the
// drop), and one the server took but did not answer before it went is
// lost with its answer; either waited out its whole timeout, and a
// submission whose PubAck never came was answered 503 after 5 s for a
// restart of 0.3 s (docs/decisions.md, hH21). A request that knows of
// the drop can be sent again at once, buffered by nats.go and sent on
// the new connection, when sending it twice is safe.
type drops struct {
	cur atomic.Pointer[dropEpoch]
}

// dropEpoch is the time between two drops of the connection: its ctx
// ends at the next.
type dropEpoch struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newDropEpoch() *dropEpoch {
	ctx, cancel := context.WithCancel(context.Background())
	return &dropEpoch{ctx: ctx, cancel: cancel}
}

// watch makes d follow nc's drops: its disconnect handler, the owner's
// (cmd/orderly's log line, the tests' events) called after, as before.
// nats.go calls it once per drop, as it starts to reconnect. An owner
// that sets the handler again later takes this one away: none does.
func (d *drops) watch(nc *nats.Conn) {
	d.cur.Store(newDropEpoch())
	prev := nc.DisconnectErrHandler()
	// The deprecated handler is called only when there is no other: kept.
	legacy := nc.Opts.DisconnectedCB
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		d.dropped()
		switch {
		case prev != nil:
			prev(c, err)
		case legacy != nil:
			legacy(c)
		}
	})
}

// dropped ends the current epoch, and with it every request that waits
// under it.
func (d *drops) dropped() {
	if old := d.cur.Swap(newDropEpoch()); old != nil {
		old.cancel()
	}
}

// bound is a context for one try of a request until deadline, that ends
// too when the connection drops, with the epoch it ends with (nil when d
// watches no connection: the context ends at the deadline or with
// caller only). The caller calls cancel when the try is over.
func (d *drops) bound(caller context.Context, deadline time.Time) (context.Context, *dropEpoch, context.CancelFunc) {
	ep := d.cur.Load()
	if ep == nil {
		ctx, cancel := context.WithDeadline(caller, deadline)
		return ctx, nil, cancel
	}
	if caller.Done() == nil {
		// A caller that is never cancelled (the intake's submissions,
		// context.WithoutCancel): the epoch's context is the parent, so
		// a try costs no more than before. A request's values are not
		// read by nats.go.
		ctx, cancel := context.WithDeadline(ep.ctx, deadline)
		return ctx, ep, cancel
	}
	ctx, cancel := context.WithDeadline(caller, deadline)
	stop := context.AfterFunc(ep.ctx, cancel)
	return ctx, ep, func() { stop(); cancel() }
}

// cut reports whether the try under ep ended because the connection
// dropped.
func (ep *dropEpoch) cut() bool { return ep != nil && ep.ctx.Err() != nil }

// again says whether try, which ended with err under ep, is sent once
// more: a drop ended it, the caller still waits, and tries and time are
// left (Publish and RetryOnDrop).
func (ep *dropEpoch) again(caller context.Context, err error, try int, deadline time.Time) bool {
	return err != nil && ep.cut() && caller.Err() == nil && try < publishTries && time.Now().Before(deadline)
}

// RetryOnDrop runs f, a request that may be sent twice (a read; a write
// whose second copy is harmless), with a context that ends too when the
// connection drops, and runs it again at once when a drop ended it, up
// to publishTries in all, within ctx's deadline (without one, 5 s for
// them all, jetstream's default for one request). A request lost with the connection
// otherwise waited out ctx (docs/decisions.md, hH21): the hosts listing
// answered without the heartbeats after a restart of 0.3 s.
func (q *Queue) RetryOnDrop(ctx context.Context, f func(context.Context) error) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(publishAckWait) // jetstream's own default
	}
	for try := 1; ; try++ {
		tctx, ep, cancel := q.drops.bound(ctx, deadline)
		err := f(tctx)
		cancel()
		if !ep.again(ctx, err, try, deadline) {
			return err
		}
	}
}

// writeOnDrop runs write, a write of val on key of kv that names the
// revision it expects (an update on a revision, a create), and sends it
// again at once when a drop of the connection ended it, under
// RetryOnDrop's rule. A copy sent again after an earlier one was
// applied, its answer lost with the connection, is refused: the key is
// no longer at the revision named, the earlier copy moved it. That
// refusal is the write applied only when the key holds val now, at the
// revision read: val names its writer (a lease's instance, the revision
// it follows and its signature; a heartbeat's instance and time), which
// nobody else writes. Held otherwise, the refusal is returned as it
// came, for the caller to judge as any other (Renew reads the key
// again): read as applied, a write another worker's took the place of
// would have had a holder renew a lease it had lost.
func (q *Queue) writeOnDrop(ctx context.Context, kv jetstream.KeyValue, key string, val []byte, write func(context.Context) (uint64, error)) (uint64, error) {
	var rev uint64
	err := q.sendOnDrop(ctx, func(ctx context.Context) (err error) {
		rev, err = write(ctx)
		return err
	}, func(ctx context.Context) bool {
		var e jetstream.KeyValueEntry
		if q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
			e, err = kv.Get(ctx, key)
			return err
		}) != nil || !bytes.Equal(e.Value(), val) {
			return false
		}
		rev = e.Revision()
		return true
	})
	return rev, err
}

// sendOnDrop runs send, a write on a key that names the revision it
// expects, under RetryOnDrop. When a copy sent again was refused as
// raced (the key moved since the revision named), applied reads the key
// and says whether what it holds is an earlier copy's doing, its answer
// lost with the connection: then the write is done, and nil is
// returned. Otherwise the refusal comes back as it came: the conditioned
// copy changed nothing that another writer wrote meanwhile.
func (q *Queue) sendOnDrop(ctx context.Context, send func(context.Context) error, applied func(context.Context) bool) error {
	tries := 0
	err := q.RetryOnDrop(ctx, func(ctx context.Context) error {
		tries++
		return send(ctx)
	})
	if err == nil || tries == 1 || !raced(err) || !applied(ctx) {
		return err
	}
	return nil
}

// dropKV is the hosts bucket as a worker reads and writes it (its
// lease, heartbeat and standby report, the bucket's TTL): each request
// sent again at once when a drop of the connection ended it
// (RetryOnDrop, writeOnDrop, sendOnDrop). A renewal or a heartbeat whose
// answer a nats-server restart lost waited out jetstream's 5 s, the next
// renewal with it (they are sent one after the other), and the worker's
// lease aged by as much: two such in a row can lapse a lease of 15 s
// under a live holder (docs/decisions.md, hD22); a read of the bucket's
// TTL lost held the renewals as long (hB23).
type dropKV struct {
	jetstream.KeyValue
	q *Queue
}

func (k dropKV) Get(ctx context.Context, key string) (e jetstream.KeyValueEntry, err error) {
	err = k.q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		e, err = k.KeyValue.Get(ctx, key)
		return err
	})
	return e, err
}

func (k dropKV) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	return k.q.writeOnDrop(ctx, k.KeyValue, key, val, func(ctx context.Context) (uint64, error) {
		return k.KeyValue.Update(ctx, key, val, rev)
	})
}

func (k dropKV) Create(ctx context.Context, key string, val []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return k.q.writeOnDrop(ctx, k.KeyValue, key, val, func(ctx context.Context) (uint64, error) {
		return k.KeyValue.Create(ctx, key, val, opts...)
	})
}

// Put writes val again when a drop ended its write: what a worker puts
// is its own (a holder's lease, within the lease, in Renew; a standby's
// report, StandbyBeat), where writing it twice is writing it once. A
// take by put (a standby's after lostTakes beaten takes, a holder's
// retake) overwrites whatever the key holds when it arrives: a copy
// sent again overwrites only what was stored between the two, as the
// first would have had it arrived that much later; a rival honest
// writer's conditioned write stored there is refused by the first
// copy's revision, so none is.
func (k dropKV) Put(ctx context.Context, key string, val []byte) (rev uint64, err error) {
	err = k.q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		rev, err = k.KeyValue.Put(ctx, key, val)
		return err
	})
	return rev, err
}

// Delete sends the delete of key again when a drop ended it. On a
// revision (jetstream.LastRevision: a worker's own heartbeat,
// Lease.Offline), a copy sent again after the first was stored is
// refused, the first's delete having moved the key: that refusal is the
// delete applied when the key is gone now, which the key's read tells
// (a key the caller may read: not a standby report, StandbyGone). A key
// written by another since (the host's next holder's heartbeat) refused
// the copy too, and is left: the refusal is returned.
func (k dropKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	return k.q.sendOnDrop(ctx, func(ctx context.Context) error {
		return k.KeyValue.Delete(ctx, key, opts...)
	}, func(ctx context.Context) bool {
		_, err := k.Get(ctx, key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}

// Status reads the bucket's state (its TTL, the server's time, its last
// sequence) again when a drop ended the read.
func (k dropKV) Status(ctx context.Context) (st jetstream.KeyValueStatus, err error) {
	err = k.q.RetryOnDrop(ctx, func(ctx context.Context) (err error) {
		st, err = k.KeyValue.Status(ctx)
		return err
	})
	return st, err
}

// hostsOnDrop is the hosts bucket with its requests sent again at once
// when a drop of the connection ended them (dropKV).
func (q *Queue) hostsOnDrop() dropKV { return dropKV{KeyValue: q.kv, q: q} }
