package queue

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// Event is a status change of an order, published by the worker on
// orderly.events.<id> after the change is committed to PostgreSQL. It is a
// notification: readers fetch the order itself from PostgreSQL.
type Event struct {
	OrderID uuid.UUID `json:"order_id"`
	Type    string    `json:"type"` // started, finished, interrupted
	Status  string    `json:"status"`
	Host    string    `json:"host"`
}

// PublishEvent sends ev on core NATS. Events are best effort; waiters fall
// back to reading PostgreSQL.
func (q *Queue) PublishEvent(ev Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := q.nc.Publish(EventsSubject+ev.OrderID.String(), b); err != nil {
		return fmt.Errorf("publish event of order %s: %w", ev.OrderID, err)
	}
	return nil
}

// SubscribeEvents delivers the events of one order to a buffered channel.
// Subscribe before publishing the order, so that no event can be missed.
func (q *Queue) SubscribeEvents(id uuid.UUID) (*nats.Subscription, <-chan Event, error) {
	ch := make(chan Event, 8)
	sub, err := q.nc.Subscribe(EventsSubject+id.String(), func(m *nats.Msg) {
		var ev Event
		if json.Unmarshal(m.Data, &ev) == nil {
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

// Control is a request to the worker of a host about a running order.
type Control struct {
	OrderID uuid.UUID `json:"order_id"`
	Signal  string    `json:"signal"`
	Actor   string    `json:"actor"`
}

// SendControl delivers a control request to the host's worker.
func (q *Queue) SendControl(host string, c Control) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return q.nc.Publish(ControlSubject+host, b)
}

// SubscribeControl calls fn for every control request to host.
func (q *Queue) SubscribeControl(host string, fn func(Control)) (*nats.Subscription, error) {
	return q.nc.Subscribe(ControlSubject+host, func(m *nats.Msg) {
		var c Control
		if json.Unmarshal(m.Data, &c) == nil {
			fn(c)
		}
	})
}
