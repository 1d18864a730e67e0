package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The live stream takes no rollups (liveConfig): a finished order's
// messages are purged by the API instead, which alone may purge a stream.
// A rollup was how the worker dropped its order's chunks, and the header
// that did it cannot be limited to one subject: a worker's seed that sent
// `Nats-Rollup: all` on its own output subject purged every host's live
// output (docs/security.md). A purge request names the subjects it
// purges, and no worker may send one.

// liveFreeGroup is the queue group of the API replicas' subscriptions to
// the ends of orders with live messages to free (SubscribeFinished): one
// replica frees each order.
const liveFreeGroup = "orderly_live_free"

// SubscribeFinished calls fn with the host and id of each order whose
// end reaches this replica on FreeSubjectOf (PublishEvent sends it after
// a finished event that is not alone), one replica of a queue group per
// order, from the subscription's goroutine (fn must not block). The host
// and id are the subject's: only the host's worker and the API may
// publish there. What it hears is a hint, never proof that the order
// ended: a worker's seed can have a server answer land on another host's
// event subject (docs/security.md), so the caller asks PostgreSQL before
// it frees anything (intake's freeLive).
//
// It subscribed to every event before (orderly.events.>), and dropped
// the started events and the finished ones alone: two deliveries per
// order that prints nothing, for nothing. A worker from before that
// sends no FreeSubjectOf leaves its orders' live messages to the
// minute's sweep (LiveLeftovers) during a rolling upgrade
// (docs/deploy.md).
func (q *Queue) SubscribeFinished(fn func(host string, id uuid.UUID)) (stop func(), err error) {
	sub, err := q.nc.QueueSubscribe(EventsSubject+"*.*"+freeSuffix, liveFreeGroup, func(m *nats.Msg) {
		subject, ok := strings.CutSuffix(m.Subject, freeSuffix)
		if !ok {
			return
		}
		if host, id, ok := orderOfSubject(subject, EventsSubject); ok {
			fn(host, id)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to finished orders' ends: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// orderOfSubject is the host and order id of prefix + host + "." + id.
func orderOfSubject(subject, prefix string) (host string, id uuid.UUID, ok bool) {
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return "", uuid.Nil, false
	}
	host, tok, ok := strings.Cut(rest, ".")
	if !ok || host == "" {
		return "", uuid.Nil, false
	}
	id, err := uuid.Parse(tok)
	if err != nil {
		return "", uuid.Nil, false
	}
	return host, id, true
}

// FreeLive drops what the live stream holds of order id of host, which
// has ended (PostgreSQL has its whole output), but its last message: the
// finished event, which expires after Options.FinishedTTL, so a follower
// that attaches within it reads the end there. Kept for the stream's
// hour, a 10 MiB output held 10 MiB of the NATS server's memory for
// nothing, and two events of every order filled its 256 MiB within the
// hour under a few hundred orders a second. One purge request for both
// subjects (orderly.*.<host>.<id>), keeping the newest message of the
// two; idempotent, so any API replica may send it, and again.
func (q *Queue) FreeLive(ctx context.Context, host string, id uuid.UUID) error {
	_, err := q.purgeLive(ctx, "orderly.*."+host+"."+id.String(), 1)
	if err != nil {
		return fmt.Errorf("free the live messages of order %s: %w", id, err)
	}
	return nil
}

// LiveOrder is what the live stream holds of one order: how many output
// chunks and events.
type LiveOrder struct {
	Host           string
	ID             uuid.UUID
	Output, Events uint64
}

// LiveLeftovers lists the orders of which the live stream holds more
// than a finished order leaves once freed (FreeLive) or alone
// (Event.Alone): any output chunk, or more than two events. Those of
// ended orders were missed by the
// finished events' path (no API replica subscribed then, an event lost,
// a purge that came before the event's store in a cluster), and
// FreeLeftover frees them. One STREAM.INFO listing every subject: the
// stream holds the running orders' and the last FinishedTTL's.
func (q *Queue) LiveLeftovers(ctx context.Context) ([]LiveOrder, error) {
	st, err := q.js.Stream(ctx, LiveStream)
	if err != nil {
		return nil, fmt.Errorf("list the live stream's orders: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("orderly.*.*.*"))
	if err != nil {
		return nil, fmt.Errorf("list the live stream's orders: %w", err)
	}
	byID := map[uuid.UUID]*LiveOrder{}
	for subj, n := range info.State.Subjects {
		prefix, events := OutputSubject, false
		if strings.HasPrefix(subj, EventsSubject) {
			prefix, events = EventsSubject, true
		}
		host, id, ok := orderOfSubject(subj, prefix)
		if !ok {
			continue
		}
		o := byID[id]
		if o == nil {
			o = &LiveOrder{Host: host, ID: id}
			byID[id] = o
		}
		if o.Host != host {
			continue // another host's subject for the same id: never freed by this one
		}
		if events {
			o.Events = n
		} else {
			o.Output = n
		}
	}
	var left []LiveOrder
	for _, o := range byID {
		// Two events and no chunk are, for most orders, a started event
		// that expires (StartedTTL) and a finished one (Event.Alone):
		// listed, they were every order of the last minute, each asked
		// about and purged again. A started event without a TTL whose
		// finished event's purge was missed stays for the stream's hour,
		// as a lone started event does.
		if o.Output > 0 || o.Events > 2 {
			left = append(left, *o)
		}
	}
	return left, nil
}

// FreeLeftover frees an ended order LiveLeftovers listed: its output
// subject whole, and its events but a finished one that is the last (it
// expires by its TTL). Not FreeLive's one request: the newest of the
// order's messages is no finished event when that was never stored (the
// reason it was missed, often), and FreeLive kept a chunk then. Up to
// three requests, for the few orders the finished events' path missed.
func (q *Queue) FreeLeftover(ctx context.Context, o LiveOrder) error {
	if o.Output > 0 {
		if _, err := q.purgeLive(ctx, OutputSubjectOf(o.Host, o.ID), 0); err != nil {
			return fmt.Errorf("free the live output of order %s: %w", o.ID, err)
		}
	}
	if o.Events == 0 {
		return nil
	}
	subj := EventSubjectOf(o.Host, o.ID)
	var keep uint64
	st, err := q.js.Stream(ctx, LiveStream)
	if err == nil {
		var m *jetstream.RawStreamMsg
		m, err = st.GetLastMsgForSubject(ctx, subj)
		if err == nil && bytes.Contains(m.Data, []byte(`"finished"`)) {
			keep = 1
		}
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("free the live events of order %s: %w", o.ID, err)
	}
	if _, err := q.purgeLive(ctx, subj, keep); err != nil {
		return fmt.Errorf("free the live events of order %s: %w", o.ID, err)
	}
	return nil
}

// purgeLive purges the live stream's messages on filter but the newest
// keep, with a request of its own rather than a stream handle's (whose
// making is a STREAM.INFO per purge).
func (q *Queue) purgeLive(ctx context.Context, filter string, keep uint64) (uint64, error) {
	req, err := json.Marshal(struct {
		Filter string `json:"filter"`
		Keep   uint64 `json:"keep,omitempty"`
	}{filter, keep})
	if err != nil {
		return 0, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, liveTryTimeout)
		defer cancel()
	}
	m, err := q.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+LiveStream, req)
	if err != nil {
		return 0, err
	}
	var resp struct {
		Success bool   `json:"success"`
		Purged  uint64 `json:"purged"`
		Error   *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, fmt.Errorf("purge answer %q: %w", m.Data, err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("purge refused: %s (%d)", resp.Error.Description, resp.Error.Code)
	}
	if !resp.Success {
		return 0, errors.New("purge not done")
	}
	return resp.Purged, nil
}
