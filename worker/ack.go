package worker

import (
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// ackConfirmWait bounds how long the server may take to confirm an ack
// before the worker suspects it was lost. Confirmations take well under a
// millisecond; a consumer without a leader answers at once that nobody
// listens.
const ackConfirmWait = 2 * time.Second

// ackBody is what an ack sends (jetstream's AckAck).
var ackBody = []byte("+ACK")

// acks has the server confirm each ack of a tenure. A plain ack is fire
// and forget: one sent while a NATS cluster elected the consumer's leader
// was lost without a trace, no error reached the message iterator
// (nats.go handles the leadership change itself), and with both held
// messages counted as unacked the host waited for the 30 s ack timer
// (TestFaultsNATSCluster: 22.9 s, once in about seven runs). An ack the
// server does not confirm marks the tenure's consumer suspect; the stall
// check (stall.go) then compares the consumer's view once the worker is
// idle, and rewinds.
//
// The ack is published with a reply subject under one subscription of
// the tenure, from the goroutine that settles the order, and a timer
// waits for its confirmation: no goroutine blocked in a request per
// order, and the ack shares its socket write with the finished event
// published right before it (nats.go's flusher writes both at once).
type acks struct {
	nc     *nats.Conn
	st     *stall
	wait   time.Duration // for a confirmation: ackConfirmWait
	warn   func(msg string, args ...any)
	prefix string // the replies' subject, without the ack's number
	sub    *nats.Subscription

	mu      sync.Mutex
	next    uint64
	pending map[uint64]pendingAck
	ended   bool
	// confirmed: every ack up to this one was confirmed; done holds
	// those confirmed past one still pending. raise is told the highest
	// message acked among them (ackedTo).
	confirmed uint64
	done      map[uint64]queue.Acked
	top       queue.Acked
	raise     func(queue.Acked)
	// drops receives the connection's drops, each of which loses every
	// ack pending (dropped); watching is done once its goroutine is.
	drops    chan nats.Status
	watching chan struct{}
}

type pendingAck struct {
	id    uuid.UUID
	timer *time.Timer
	msg   queue.Acked // the message acked, zero when its metadata cannot be read
}

// newAcks subscribes to the confirmations of the acks of a tenure whose
// stall check is st.
// raise is told how far the acks were confirmed (ackedTo).
func newAcks(nc *nats.Conn, st *stall, warn func(string, ...any), raise func(queue.Acked)) (*acks, error) {
	a := &acks{nc: nc, st: st, wait: ackConfirmWait, warn: warn, prefix: nc.NewRespInbox() + ".",
		pending: map[uint64]pendingAck{}, done: map[uint64]queue.Acked{}, raise: raise}
	sub, err := nc.Subscribe(a.prefix+"*", a.answered)
	if err != nil {
		return nil, err
	}
	a.sub = sub
	a.drops, a.watching = nc.StatusChanged(nats.RECONNECTING, nats.DISCONNECTED), make(chan struct{})
	go func() {
		defer close(a.watching)
		for range a.drops {
			a.dropped()
		}
	}()
	return a, nil
}

// dropped counts every ack pending at a drop of the connection lost at
// once: the server's confirmation of one it took left on the connection
// that is gone, and one it did not take is gone with it. Each waited out
// its ackConfirmWait (2 s), and the stall check, which waits for no ack
// to be pending, found the consumer a nats-server restart lost that much
// later: the host ran nothing for 2.4 – 2.5 s after 3 of 15 restarts
// (docs/decisions.md, hF24). An ack sent after the drop, buffered for the
// new connection, may be counted lost too: that costs a check of the
// consumer, no more.
func (a *acks) dropped() {
	a.mu.Lock()
	lost := maps.Clone(a.pending)
	a.mu.Unlock()
	for n, p := range lost {
		if a.take(n) { // not confirmed meanwhile
			a.lost(p.id, errors.New("the connection dropped before its confirmation"))
		}
	}
}

// send acks msg, the delivery of order id, and waits for its
// confirmation in a timer.
func (a *acks) send(msg jetstream.Msg, id uuid.UUID) {
	a.mu.Lock()
	if a.ended {
		a.mu.Unlock()
		_ = msg.Ack() // the tenure is over: nobody waits for a confirmation
		return
	}
	var at queue.Acked
	if meta, err := msg.Metadata(); err == nil {
		at = queue.Acked{Seq: meta.Sequence.Stream, Stored: meta.Timestamp, ID: id}
	}
	a.next++
	n := a.next
	a.pending[n] = pendingAck{id: id, msg: at, timer: time.AfterFunc(a.wait, func() {
		if a.take(n) {
			a.lost(id, errors.New("no confirmation within "+a.wait.String()))
		}
	})}
	a.st.acking.Add(1)
	a.mu.Unlock()
	if err := a.nc.PublishRequest(msg.Reply(), a.prefix+strconv.FormatUint(n, 10), ackBody); err != nil && a.take(n) {
		a.lost(id, err)
	}
}

// answered is the server's answer to one ack: empty when the ack was
// taken, a status (503: no responders, the consumer has no leader) when
// it was not.
func (a *acks) answered(m *nats.Msg) {
	n, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, a.prefix), 10, 64)
	if err != nil {
		return
	}
	a.mu.Lock()
	p, ok := a.pending[n]
	a.mu.Unlock()
	if !ok || !a.take(n) {
		return // too late: the timer counted it lost
	}
	// nats.go's status headers (not exported).
	if status := m.Header.Get("Status"); status != "" {
		a.lost(p.id, errors.New("ack refused: status "+status+" "+m.Header.Get("Description")))
		return
	}
	a.taken(n, p.msg)
}

// taken counts ack n, of the message at, as confirmed, and tells raise
// the highest message acked once every ack before it is confirmed too:
// the worker acks the host's messages one at a time in stream order, so
// the server's ack floor is then past it. One not confirmed (refused,
// lost) holds it for the rest of the tenure.
func (a *acks) taken(n uint64, at queue.Acked) {
	a.mu.Lock()
	a.done[n] = at
	moved := false
	for {
		d, ok := a.done[a.confirmed+1]
		if !ok {
			break
		}
		delete(a.done, a.confirmed+1)
		a.confirmed++
		if d.Seq > a.top.Seq {
			a.top, moved = d, true
		}
	}
	top := a.top
	a.mu.Unlock()
	if moved && a.raise != nil {
		a.raise(top)
	}
}

// take removes ack n from the pending ones, stopping its timer; false
// when it was not pending any more.
func (a *acks) take(n uint64) bool {
	a.mu.Lock()
	p, ok := a.pending[n]
	if ok {
		delete(a.pending, n)
		p.timer.Stop()
	}
	a.mu.Unlock()
	// The check waited for this confirmation only when the worker is
	// otherwise idle. A busy one pokes it itself when its loop is idle
	// again (tenure), after this count went down: a poke per
	// confirmation woke the watch for every order of a backlog drained
	// from a tenure's start (suspect until its first idle check), to find
	// the worker busy (docs/benchmarks.md, "The worker's per-order path,
	// counted (hC10)").
	if ok && a.st.acking.Add(-1) == 0 && a.st.suspect.Load() && a.st.idle() {
		a.st.poke()
	}
	return ok
}

// lost marks the tenure's consumer suspect after an ack the server did
// not confirm.
func (a *acks) lost(id uuid.UUID, err error) {
	a.st.suspectNow()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionDraining) {
		return // the worker is stopping: its successor settles what is held
	}
	a.warn("ack not confirmed; the consumer is checked once the worker is idle", "order_id", id, "error", err)
}

// end stops waiting for the tenure's confirmations.
func (a *acks) end() {
	a.mu.Lock()
	a.ended = true
	for n, p := range a.pending {
		p.timer.Stop()
		delete(a.pending, n)
		a.st.acking.Add(-1)
	}
	a.mu.Unlock()
	_ = a.sub.Unsubscribe()
	if a.drops != nil {
		a.nc.RemoveStatusListener(a.drops)
		<-a.watching
	}
}

// ack acknowledges msg and has the server confirm it (see acks).
func (w *Worker) ack(msg jetstream.Msg, id uuid.UUID) {
	if a := w.acks.Load(); a != nil {
		a.send(msg, id)
		return
	}
	_ = msg.Ack() // outside a tenure (none today): unconfirmed
}
