package api

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/jsonenc"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// eventHub is the API process's one subscription to every order's status
// events (orderly.events.*.*), shared by the requests that wait for an order
// (?wait). A waiting request registers its order in a map instead of
// subscribing on NATS itself: a subscription per request cost a SUB and an
// UNSUB, a goroutine in the client and two changes of the server's
// subscription list for every synchronous submit (docs/benchmarks.md, "Per-
// order budget"). The map is keyed by the full subject, host included, so an
// event reaches a waiter only when it came on its order's own host's
// subject, which only that host's worker (and the API) may publish to
// (docs/security.md, "The bus") — the guarantee the per-order subscription
// gave. Events of orders nobody waits for are dropped without decoding.
type eventHub struct {
	// subMu guards nc and sub, held while the subscription is made
	// (subscribe); mu guards waiters alone.
	subMu   sync.Mutex
	nc      *nats.Conn
	sub     *nats.Subscription
	mu      sync.Mutex
	waiters map[string]waiter
}

// waiter is one request waiting for the events of one order. Its events
// carry the order's id and status only (deliver). told: the order's end
// was handed over.
type waiter struct {
	id   uuid.UUID
	ch   chan queue.Event
	told bool
}

// wait registers a waiter for the events of order id of host and returns
// its channel and how to unregister. Register before publishing the order,
// so that no event can be missed: the shared subscription is made (and
// flushed to the server) on the first wait of a connection.
func (h *eventHub) wait(nc *nats.Conn, host string, id uuid.UUID) (<-chan queue.Event, func(), error) {
	return h.waitAll(nc, []string{host}, []uuid.UUID{id})
}

// waitAll is wait for the events of several orders (a fan-out's: ids[i]
// of hosts[i]), on one channel.
func (h *eventHub) waitAll(nc *nats.Conn, hosts []string, ids []uuid.UUID) (<-chan queue.Event, func(), error) {
	ch := make(chan queue.Event, 8*len(ids))
	subjects := make([]string, len(ids))
	for i, id := range ids {
		subjects[i] = queue.EventSubjectOf(hosts[i], id)
	}
	if err := h.subscribe(nc); err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters == nil {
		h.waiters = map[string]waiter{}
	}
	for i, subject := range subjects {
		h.waiters[subject] = waiter{id: ids[i], ch: ch}
	}
	return ch, func() {
		h.mu.Lock()
		for _, subject := range subjects {
			if h.waiters[subject].ch == ch {
				delete(h.waiters, subject)
			}
		}
		h.mu.Unlock()
	}, nil
}

// subscribe makes the hub's subscription on nc unless it has one there
// that works. It holds subMu, not mu, for the subscription's flush: a
// round trip to the server, up to nats.go's ten seconds when the server
// does not answer, and mu is what hear takes on the goroutine of serve's
// worker that publishes an order's end (queue.HearOwnEnds), which must
// not wait on the bus. Under mu, the first wait of a process whose NATS
// did not answer held that worker's settle (its ack, its next order) and
// every other wait and delivery for the ten seconds.
func (h *eventHub) subscribe(nc *nats.Conn) error {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	if h.sub != nil && h.sub.IsValid() && h.nc == nc {
		return nil
	}
	if h.sub != nil {
		_ = h.sub.Unsubscribe()
	}
	// The events of four tokens only: not the ends told to the live
	// output's freeing (queue.FreeSubjectOf), one more delivery per
	// order that printed, which no waiter reads.
	sub, err := nc.Subscribe(queue.EventsSubject+"*.*", h.deliver)
	if err != nil {
		return fmt.Errorf("subscribe to order events: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("subscribe to order events: %w", err)
	}
	h.nc, h.sub = nc, sub
	return nil
}

// deliver hands an event that ends its order to the order's waiter, if
// any, without blocking the subscription: the waiter's buffer holds every
// event an order has. Every waiter (awaitFinish, awaitBatch) waits for the
// end only: a started event handed over woke the waiting request for
// nothing, once per synchronous order (docs/benchmarks.md, "Serve's
// hand-offs per order, counted").
//
// An order's end is handed over once: where the API's worker shares its
// Queue (serve), the end comes twice, first from the worker's own
// goroutine (queue.HearOwnEnds), then from the bus, and the second woke
// the waiter again for nothing (a fan-out's wait listed its batch again).
func (h *eventHub) deliver(m *nats.Msg) { h.hear(m.Subject, m.Data, nil) }

// HearEnd is hear of this process's worker's finished events
// (queue.HearOwnEnds), with the order its commit wrote when it was read
// back (committed; nil when not).
func (h *eventHub) HearEnd(subject string, data []byte, committed *order.Order) {
	h.hear(subject, data, committed)
}

// AwaitsEnd says whether a request waits here for order id of host's
// end, not yet handed over: this process's worker then reads back the
// order its commit writes (queue.OwnEndHearer).
func (h *eventHub) AwaitsEnd(host string, id uuid.UUID) bool {
	subject := queue.EventSubjectOf(host, id)
	h.mu.Lock()
	w, ok := h.waiters[subject]
	h.mu.Unlock()
	return ok && w.id == id && !w.told
}

// hear is deliver of an event's subject and data: the bus's (deliver)
// or this process's worker's (HearEnd), which alone may give committed,
// the order as that worker's commit wrote it. The waiter is handed it
// with the end when it is that order at that status; never anything
// from the bus, which wakes a waiter only (it reads the order from
// PostgreSQL).
func (h *eventHub) hear(subject string, data []byte, committed *order.Order) {
	h.mu.Lock()
	w, ok := h.waiters[subject]
	h.mu.Unlock()
	if !ok || w.told {
		return
	}
	id, status, err := eventEnd(data)
	if err != nil || id != w.id || !status.Terminal() {
		return
	}
	// Told here, under the lock, by whichever hearer comes first: the
	// worker's own and the bus's copy may both have passed the check
	// above.
	h.mu.Lock()
	cur, ok := h.waiters[subject]
	first := ok && cur.ch == w.ch && !cur.told
	if first {
		cur.told = true
		h.waiters[subject] = cur
	}
	h.mu.Unlock()
	if !first {
		return
	}
	ev := queue.Event{OrderID: id, Status: string(status)}
	if committed != nil && committed.ID == id && committed.Status == status {
		ev.Committed = committed
	}
	select {
	case w.ch <- ev:
	default:
	}
}

// eventEnd is what the waiters read of an event: its order's id and
// status. The event as PublishEvent writes it (a flat object of plain
// ASCII strings under its four keys) is read here, without encoding/json:
// its reflection and decode state took ten allocations per finished
// event (docs/benchmarks.md, "The sync order's wait side"). Anything
// else (an escape, a value that is not a string, another key, which
// encoding/json would match without regard to case) is decoded by
// encoding/json, as every event was: the same id, status and error.
func eventEnd(b []byte) (uuid.UUID, order.Status, error) {
	if id, status, ok, err := plainEvent(b); ok {
		return id, status, err
	}
	// Only what the waiters read: decoding the whole event (its type and
	// host too) took twice the allocations (docs/benchmarks.md, "The sync
	// submit, counted").
	var ev struct {
		OrderID uuid.UUID `json:"order_id"`
		Status  string    `json:"status"`
	}
	err := json.Unmarshal(b, &ev)
	return ev.OrderID, order.Status(ev.Status), err
}

// plainEvent reads b when it is a flat JSON object whose keys are
// queue.Event's and whose values are strings of printable ASCII without
// escapes; ok is false for any other b. The status is one of
// order.Statuses (no allocation) or "" when it is none of them, which
// the waiters treat alike (not an end).
func plainEvent(b []byte) (id uuid.UUID, status order.Status, ok bool, err error) {
	i := jsonenc.Space(b, 0)
	if i == len(b) || b[i] != '{' {
		return id, "", false, nil
	}
	var statusText []byte
	i = jsonenc.Space(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			k, next, plain := jsonenc.PlainString(b, i)
			if !plain {
				return id, "", false, nil
			}
			if i = jsonenc.Space(b, next); i == len(b) || b[i] != ':' {
				return id, "", false, nil
			}
			var v []byte
			if string(k) == "alone" {
				// queue.Event.Alone, the one value that is no string
				// (true on most finished events), which the waiters do
				// not read.
				if next = jsonenc.PlainBool(b, jsonenc.Space(b, i+1)); next < 0 {
					return id, "", false, nil
				}
			} else if v, next, plain = jsonenc.PlainString(b, jsonenc.Space(b, i+1)); !plain {
				return id, "", false, nil
			}
			switch string(k) {
			case "order_id":
				// Each one is read, as encoding/json reads them: a bad
				// one is an error even when a later one is good.
				if id, err = uuid.ParseBytes(v); err != nil {
					return uuid.Nil, "", true, err
				}
			case "status":
				statusText = v
			case "type", "host", "alone":
			default:
				return id, "", false, nil
			}
			if i = jsonenc.Space(b, next); i < len(b) && b[i] == ',' {
				i = jsonenc.Space(b, i+1)
				continue
			}
			if i == len(b) || b[i] != '}' {
				return id, "", false, nil
			}
			i++
			break
		}
	}
	if jsonenc.Space(b, i) != len(b) {
		return id, "", false, nil
	}
	for _, s := range order.Statuses {
		if string(statusText) == string(s) {
			status = s
		}
	}
	return id, status, true, nil
}
