package queue

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/jsonenc"
	"github.com/orderly-run/orderly/internal/order"
)

// EventSubjectOf is where the worker of host publishes the status events of
// order id: orderly.events.<host>.<id>. The host is in the subject so that
// NATS permissions can let a worker publish only its own host's events
// (docs/security.md, "The bus").
func EventSubjectOf(host string, id uuid.UUID) string {
	return orderSubject(EventsSubject, host, id, "")
}

// FreeSubjectOf is where an order of host that leaves live messages to
// free is said to have ended: orderly.events.<host>.<id>.free, the
// API's liveFreeGroup alone subscribes there (SubscribeFinished). Inside
// orderly.events.<host>.>, so a worker's permissions and its account's
// imports (deploy/nats/auth.conf) already cover it, as the API's do; the
// live stream takes only orderly.events.*.* (liveConfig), and the API's
// event hub subscribes to that too, so neither is sent it.
func FreeSubjectOf(host string, id uuid.UUID) string {
	return orderSubject(EventsSubject, host, id, freeSuffix)
}

// freeSuffix ends FreeSubjectOf's subjects.
const freeSuffix = ".free"

// OutputSubjectOf is where the worker of host publishes the live output of
// order id: orderly.output.<host>.<id>, scoped by host like the events.
func OutputSubjectOf(host string, id uuid.UUID) string {
	return orderSubject(OutputSubject, host, id, "")
}

// orderSubject is prefix + host + "." + id.String() + suffix in one
// allocation (the concatenation with the id's text took two).
func orderSubject(prefix, host string, id uuid.UUID, suffix string) string {
	var b [96]byte
	return string(append(appendUUID(append(append(append(b[:0], prefix...), host...), '.'), id), suffix...))
}

// Event is a status change of an order, published on
// orderly.events.<host>.<id> after the change is committed to PostgreSQL.
// It is a notification: readers fetch the order itself from PostgreSQL,
// but for this process's own readers of its worker's ends, which may be
// handed the order that worker's commit wrote (Committed).
type Event struct {
	OrderID uuid.UUID `json:"order_id"`
	Type    string    `json:"type"` // started, unclaimed (handed back unstarted: queued again), finished
	Status  string    `json:"status"`
	Host    string    `json:"host"`
	// Alone, on a finished event, says that the live stream holds
	// nothing else of the order that does not expire by itself: its
	// worker published no output chunk, and its started event carried a
	// TTL (StartedTTL). The API then purges nothing: PublishEvent tells
	// SubscribeFinished of the end only when it is not alone. A forged
	// one leaves chunks to the minute's sweep, which lists every order
	// with any (LiveLeftovers).
	Alone bool `json:"alone,omitempty"`
	// TTL, on a started event, is how long the live stream keeps it
	// (StartedTTL); 0 keeps it until it is purged or the stream's MaxAge.
	TTL time.Duration `json:"-"`
	// Committed, on a finished event of this process's worker, is the
	// order as its result's commit wrote it (postgres.Finish.ReadBack),
	// nil when it was not read back. It never leaves the process: only
	// its own hearers get it (HearOwnEnds); an event from the bus has
	// none, so nothing a bus message says becomes an order.
	Committed *order.Order `json:"-"`
}

// StartedTTL is the TTL of the started event of an order that runs at
// most timeout and is never run again (not idempotent): the timeout and
// a minute, so that it outlives the run (a follower attaching meanwhile
// reads it) without the API's purge. 0 (no TTL: the API purges it when
// the order ends) for an order that may run again, whose next run's
// started event tells a follower that its output starts over and must
// stay as long as the earlier run's chunks do, and for one whose bound
// is past the stream's hour, or that has none.
func StartedTTL(timeout time.Duration, idempotent bool) time.Duration {
	if idempotent || timeout <= 0 {
		return 0
	}
	ttl := timeout + startedTTLSlack
	if r := ttl % time.Second; r != 0 {
		ttl += time.Second - r // whole seconds, as nats-server keeps TTLs
	}
	if ttl >= liveMaxAge {
		return 0
	}
	return ttl
}

// startedTTLSlack is how much longer than its order's timeout a started
// event is kept: the wait for a file descriptor before the start, the
// kill grace after the timeout, the result's write.
const startedTTLSlack = time.Minute

// PublishEvent sends ev on core NATS, on the subject of ev.Host. Events are
// best effort; waiters fall back to reading PostgreSQL.
//
// The finished event ends the order's record in the live stream: it
// expires after Options.FinishedTTL (a minute), and the API, hearing it,
// purges the order's other messages (FreeLive): PostgreSQL has the
// finished order; the live stream only needs to keep what running orders
// and their followers use. Kept for the stream's hour, two events of every
// order (~350 bytes) filled its 256 MiB of serve's memory within the hour
// under a sustained few hundred orders a second.
//
// A finished event that is not alone is followed by a message without a
// body on FreeSubjectOf, which only the API's freeing subscribes to
// (SubscribeFinished). That subscription took every event of every
// order before, for the finished events not alone: the started event
// and the finished one of an order that printed nothing were two of the
// seven messages nats-server sent per sync order, each for nothing
// (docs/benchmarks.md, the thirty-fourth round). It comes after the
// event, on the same connection, so the event is stored before the
// purge it leads to is asked for (on one server; a cluster's stream
// leader may store it later, which the sweep makes good). It carries
// the finished event's TTL, in case an older API's start put back the
// live stream's subjects that take it (Mend sets them back).
//
// A finished event is handed to this process's own readers
// (HearOwnEnds) before it goes to the bus.
//
// The event's bytes are json.Marshal's (appendEvent) in a buffer lent by
// q.eventBufs: PublishMsg copies them into nats.go's buffer before it
// returns, so the buffer goes back at once.
func (q *Queue) PublishEvent(ev Event) error {
	buf, _ := q.eventBufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer q.eventBufs.Put(buf)
	m := nats.NewMsg(EventSubjectOf(ev.Host, ev.OrderID))
	*buf = appendEvent((*buf)[:0], ev)
	m.Data = *buf
	if ev.Type == "finished" {
		q.endsRecord(m)
	} else if ev.TTL > 0 {
		m.Header = q.ttlHeader(ev.TTL)
	}
	if ev.Type == "finished" {
		q.hearOwn(m.Subject, m.Data, ev.Committed)
	}
	if err := q.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("publish event of order %s: %w", ev.OrderID, err)
	}
	if ev.Type != "finished" || ev.Alone {
		return nil
	}
	if err := q.nc.PublishMsg(&nats.Msg{Subject: FreeSubjectOf(ev.Host, ev.OrderID), Header: q.ends}); err != nil {
		return fmt.Errorf("publish the end of order %s for its live messages: %w", ev.OrderID, err)
	}
	return nil
}

// appendEvent appends ev as json.Marshal writes it, byte for byte
// (TestAppendEventAsEncodingJSON), without its reflection: the worker
// publishes two events per order, and json.Marshal took three
// allocations for each (the event boxed, the id's text, the copy it
// returns). A field added to Event must be added here too; the test
// fails until it is.
func appendEvent(b []byte, ev Event) []byte {
	b = append(b, `{"order_id":"`...)
	b = appendUUID(b, ev.OrderID)
	b = append(b, `","type":`...)
	b = jsonenc.AppendString(b, ev.Type, true)
	b = append(b, `,"status":`...)
	b = jsonenc.AppendString(b, ev.Status, true)
	b = append(b, `,"host":`...)
	b = jsonenc.AppendString(b, ev.Host, true)
	if ev.Alone {
		b = append(b, `,"alone":true`...)
	}
	return append(b, '}')
}

// appendUUID appends id's text as uuid.UUID.MarshalText writes it
// (lower-case hex, 8-4-4-4-12), which needs no JSON escape.
func appendUUID(b []byte, id uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	for i, x := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[x>>4], hex[x&0xf])
	}
	return b
}

// endsRecord has m, the message that ends an order's record in the live
// stream (the finished event), expire after Options.FinishedTTL: a
// follower that attaches or resumes within it reads the end there, a
// later one from PostgreSQL (api/sse.go). It no longer rolls up the
// order's subject (the stream takes no rollups: liveConfig); the API
// purges the rest (FreeLive). m's headers become q.ends, which every
// such message shares (PublishMsg only reads them): set anew on each,
// they took allocations. m must have no other header, and nobody may set
// one on it afterwards.
func (q *Queue) endsRecord(m *nats.Msg) {
	m.Header = q.ends
}

// ttlHeader is the headers of a message the live stream keeps for ttl,
// one per ttl, shared as endsRecord's are (PublishMsg only reads them):
// the TTLs are StartedTTL's, whole seconds under an hour, so at most
// 3,600 of them.
func (q *Queue) ttlHeader(ttl time.Duration) nats.Header {
	if h, ok := q.ttls.Load(ttl); ok {
		return h.(nats.Header)
	}
	h, _ := q.ttls.LoadOrStore(ttl, endsHeader(ttl))
	return h.(nats.Header)
}

// endsHeader is endsRecord's headers for a live stream that keeps a
// finished order's last message for ttl.
func endsHeader(ttl time.Duration) nats.Header {
	h := nats.Header{}
	h.Set(jetstream.MsgTTLHeader, ttl.String())
	return h
}

// SubscribeEvents delivers the events of one order of host to a buffered
// channel. Only host's subject is subscribed: another host's worker cannot
// publish there, nor have a consumer of its own deliver there (Delivered).
// Subscribe before publishing the order, so that no event can be missed.
func (q *Queue) SubscribeEvents(host string, id uuid.UUID) (*nats.Subscription, <-chan Event, error) {
	ch := make(chan Event, 8)
	sub, err := q.nc.Subscribe(EventSubjectOf(host, id), func(m *nats.Msg) {
		if Delivered(m) {
			return
		}
		var ev Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.OrderID == id {
			select {
			case ch <- ev:
			default:
			}
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to events of order %s: %w", id, err)
	}
	return sub, ch, nil
}

// Control wakes the worker of a host up about a cancel request. It carries
// only the order id: the worker reads the request itself (who, when, which
// signal) from PostgreSQL and ignores the message when there is none, so a
// message forged on the bus cannot kill anything.
type Control struct {
	OrderID uuid.UUID `json:"order_id"`
}

// SendControl delivers a control wake-up to the host's worker.
func (q *Queue) SendControl(host string, c Control) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := q.nc.Publish(ControlSubject+host, b); err != nil {
		return fmt.Errorf("wake the worker of host %s: %w", host, err)
	}
	return nil
}

// controlOf reads a control wake-up from the bus: a JSON object naming
// an order; ok is false for anything else.
func controlOf(data []byte) (c Control, ok bool) {
	return c, json.Unmarshal(data, &c) == nil && c.OrderID != uuid.Nil
}

// Delivered says m was delivered by a JetStream consumer, not published
// on its subject: the server gives every message a consumer delivers its
// ack subject ($JS.ACK.…) as reply (its flow control asks, $JS.FC.…), and
// no orderly process publishes an event, a control wake-up or an answer
// with such a reply. Permissions keep a worker from publishing on another
// host's subjects, but not from making a push consumer (its lease's
// watch, a reader of its live output, its orders' consumer: nats-server
// takes the push or pull choice from the request's body, which no
// permission reads) whose deliver subject it chooses in the streams'
// account: h2's seed had the server deliver what it wrote on its own
// lease key or live output to orderly.control.h1 or to the events subject
// of an order of h1 (docs/security.md, "Known gaps of a stolen worker
// seed"). A delivery carries the subject its stream stored it on (the
// seed's own), so the receivers that read the order from the message's
// subject (the API's waits, its finished events: SubscribeFinished) took
// none; those that trust their subscription's subject drop it.
func Delivered(m *nats.Msg) bool { return strings.HasPrefix(m.Reply, "$JS.") }

// SubscribeControl calls fn for every control wake-up to host (one a
// consumer delivered is none: Delivered).
func (q *Queue) SubscribeControl(host string, fn func(Control)) (*nats.Subscription, error) {
	sub, err := q.nc.Subscribe(ControlSubject+host, func(m *nats.Msg) {
		if Delivered(m) {
			return
		}
		if c, ok := controlOf(m.Data); ok {
			fn(c)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to control of host %s: %w", host, err)
	}
	return sub, nil
}

// OwnEndHearer is a reader of the finished events its Queue publishes
// (HearOwnEnds): serve's API, whose waiters (?wait) its worker wakes.
type OwnEndHearer interface {
	// HearEnd is given every finished event the Queue publishes, its
	// subject and data (lent: not to be kept), and committed, the order
	// as its worker's commit wrote it, or nil (Event.Committed). It must
	// not block.
	HearEnd(subject string, data []byte, committed *order.Order)
	// AwaitsEnd says whether someone in the process waits for the end
	// of order id of host: its worker then reads back the order its
	// result's commit writes (postgres.Finish.ReadBack), which costs the
	// row's columns on the statement's answer and their scan, for the
	// waiter to answer from; an order nobody here waits for is not read
	// back.
	AwaitsEnd(host string, id uuid.UUID) bool
}

// HearOwnEnds has h given every finished event this Queue publishes
// (HearEnd), on the publishing goroutine, before the event goes to the
// bus, for as long as the Queue lives. serve's API and worker share one
// Queue: the API's waiters (?wait) were woken by the worker's finished
// event only once it had crossed the in-process connection and come
// back through nats-server, five goroutine hand-offs (nats.go's
// flusher, the server's reader and writer, nats.go's reader, the
// subscription's goroutine) that took 115 µs (p50, at load 7) on the
// sync order's serial chain (docs/benchmarks.md, the thirty-eighth
// round); heard here, the waiter is handed the event by the goroutine
// that committed the result, with the order that commit wrote when it
// was read back (AwaitsEnd). The event still goes to the bus for
// everyone else (other API replicas, followers, the live stream's
// freeing). h is given the event's subject and bytes, not its message:
// handed to a function not known here, the message was one more
// allocation per event.
func (q *Queue) HearOwnEnds(h OwnEndHearer) {
	q.hearersMu.Lock()
	defer q.hearersMu.Unlock()
	var hs []OwnEndHearer
	if cur := q.hearers.Load(); cur != nil {
		hs = append(hs, *cur...)
	}
	hs = append(hs, h)
	q.hearers.Store(&hs)
}

// AwaitsOwnEnd says whether one of this Queue's own hearers waits for
// the end of order id of host (OwnEndHearer.AwaitsEnd).
func (q *Queue) AwaitsOwnEnd(host string, id uuid.UUID) bool {
	if hs := q.hearers.Load(); hs != nil {
		for _, h := range *hs {
			if h.AwaitsEnd(host, id) {
				return true
			}
		}
	}
	return false
}

// hearOwn hands a finished event this Queue publishes, its subject and
// data, and the order its commit wrote if read back, to its own readers
// (HearOwnEnds).
func (q *Queue) hearOwn(subject string, data []byte, committed *order.Order) {
	if hs := q.hearers.Load(); hs != nil {
		for _, h := range *hs {
			h.HearEnd(subject, data, committed)
		}
	}
}
