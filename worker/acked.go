package worker

import (
	"sync"

	"github.com/orderly-run/orderly/internal/queue"
)

// ackedTo is how far the host's orders were acknowledged, as this process
// saw the server confirm it (acks): kept across tenures, so that a
// consumer a nats-server restart lost is made again past the orders
// already acked, not at the first message stored, whose finished orders
// it delivered again, each acked after two statements, before the next
// new order (queue.HostConsumerPast; docs/decisions.md, hF24).
type ackedTo struct {
	mu sync.Mutex
	at queue.Acked
	// fromFirst: a consumer made past at had another message first (the
	// stream made again, at purged): the next one starts at the first
	// message stored.
	fromFirst bool
}

// raise records that the acks up to at were confirmed.
func (a *ackedTo) raise(at queue.Acked) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if at.Seq > a.at.Seq {
		a.at = at
	}
}

// next is where the next consumer made again starts: past at, or, when
// fromFirst, at the first message (zero).
func (a *ackedTo) next() (at queue.Acked, fromFirst bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.at, a.fromFirst
}

// missed forgets at after a consumer made past it had another message
// first: nothing tells what the stream holds below that message.
func (a *ackedTo) missed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at, a.fromFirst = queue.Acked{}, true
}

// reset forgets at once a tenure consumes from a consumer not made past
// it (rewound, made at the first message or past another floor): the
// acks confirmed from then on raise it again.
func (a *ackedTo) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at, a.fromFirst = queue.Acked{}, false
}
