package queue

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// LiveOutput publishes the live output chunks of one running order
// (PublishOutput's messages, each with a Nats-Msg-Id of order, stream and
// offset) and keeps them until the order ends, so that a NATS restart
// loses none of them. The live stream is a memory stream: a restart of
// its server loses it with every chunk it held, and the chunks a worker
// publishes until an API makes it again (MendLive, about a second) go
// into no stream; a worker may not make it (its NATS permissions), nor
// read whether it is there. What a worker can see is its connection's
// reconnect: every restart of its server makes one. After one, it stops
// publishing new chunks, and publishes what it keeps again from the
// start with JetStream publishes, each waiting for the stream's
// acknowledgement (tried again every liveMendEvery until the stream is
// there again), and the chunks printed meanwhile after them, in the
// order they came, so each stream's chunks reach the live stream in
// offset order; then core publishes again. A stream that was not lost (a
// cluster's, kept by its replicas; a connection cut alone) drops a
// chunk it stored within its duplicate window (2 minutes) by its
// Nats-Msg-Id; one stored before that is stored again, and a follower,
// placing chunks by offset, drops the repeat.
//
// Nothing is kept or started until the first chunk: an order without
// output costs nothing more. Kept is at most what is published, which
// stops at the order's output cap. Publish is called from the output's
// goroutines (one per stream); Stop once the process ended, before the
// output's roll-up (EndOutput). The zero value is ready after Start.
type LiveOutput struct {
	q       *Queue
	host    string
	id      uuid.UUID
	mu      sync.Mutex
	kept    []liveChunk
	seen    uint64 // the connection's reconnect count the chunks were published under
	mending bool   // kept chunks are being published again: new ones wait
	stop    context.CancelFunc
	done    chan struct{}
}

// liveChunk is one chunk of LiveOutput, kept as it was published.
type liveChunk struct {
	stream string
	offset int64
	data   []byte
}

// liveMendEvery is how often a LiveOutput looks for a reconnect of its
// connection while nothing is printed, and tries again to publish its
// chunks while the live stream does not acknowledge them.
const liveMendEvery = 250 * time.Millisecond

// liveMendTimeout bounds the wait for one acknowledgement of a chunk
// published again.
const liveMendTimeout = 2 * time.Second

// Start readies o for the chunks of order id of host.
func (o *LiveOutput) Start(q *Queue, host string, id uuid.UUID) {
	o.q, o.host, o.id = q, host, id
}

// Publish sends one chunk (PublishOutput's) and keeps a copy of it.
func (o *LiveOutput) Publish(stream string, offset int64, p []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done == nil {
		// The first chunk: only now is there something to keep, and to
		// publish again after a reconnect.
		o.seen = o.q.nc.Stats().Reconnects
		ctx, cancel := context.WithCancel(context.Background())
		o.stop, o.done = cancel, make(chan struct{})
		go o.watch(ctx)
	}
	c := liveChunk{stream: stream, offset: offset, data: bytes.Clone(p)}
	o.kept = append(o.kept, c)
	if o.mending {
		return nil
	}
	if r := o.q.nc.Stats().Reconnects; r != o.seen {
		// Reconnected since the last chunk: the live stream may have
		// lost them all. The watch publishes this one with them.
		o.seen, o.mending = r, true
		return nil
	}
	return o.q.nc.PublishMsg(o.msg(c))
}

// Stop ends the watch, a publishing again under way included: the
// order's result in PostgreSQL has its whole output now (what a follower
// is given once it is stored). It returns once the watch publishes no
// more, so nothing of it follows the roll-up.
func (o *LiveOutput) Stop() {
	o.mu.Lock()
	stop, done := o.stop, o.done
	o.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}

// watch notices a reconnect while no chunk comes, and publishes the kept
// chunks again after one.
func (o *LiveOutput) watch(ctx context.Context) {
	defer close(o.done)
	t := time.NewTicker(liveMendEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		o.mu.Lock()
		if r := o.q.nc.Stats().Reconnects; r != o.seen {
			o.seen, o.mending = r, true
		}
		mending := o.mending
		o.mu.Unlock()
		if mending && !o.mend(ctx) {
			return
		}
	}
}

// mend publishes every kept chunk again, in the order they came, each
// acknowledged by the live stream before the next, from the first again
// after another reconnect; then lets Publish go on with the new ones.
// false: ctx ended first.
func (o *LiveOutput) mend(ctx context.Context) bool {
	for i := 0; ; {
		o.mu.Lock()
		if r := o.q.nc.Stats().Reconnects; r != o.seen {
			o.seen, i = r, 0 // lost again, perhaps with what was published
		}
		if i == len(o.kept) {
			o.mending = false
			o.mu.Unlock()
			return true
		}
		c := o.kept[i]
		o.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, liveMendTimeout)
		_, err := o.q.js.PublishMsg(pctx, o.msg(c))
		cancel()
		if err == nil {
			i++
			continue
		}
		// No stream yet (no responders), or no answer: again in a while.
		select {
		case <-ctx.Done():
			return false
		case <-time.After(liveMendEvery):
		}
	}
}

// msg is chunk c's message.
func (o *LiveOutput) msg(c liveChunk) *nats.Msg {
	m := nats.NewMsg(OutputSubjectOf(o.host, o.id))
	off := strconv.FormatInt(c.offset, 10)
	m.Header.Set(StreamHeader, c.stream)
	m.Header.Set(OffsetHeader, off)
	m.Header.Set(nats.MsgIdHdr, o.id.String()+"."+c.stream+"."+off)
	m.Data = c.data
	return m
}
