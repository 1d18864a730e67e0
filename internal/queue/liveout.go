package queue

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LiveOutput publishes the live output chunks of one running order
// (PublishOutput's messages, each with a Nats-Msg-Id of this run of the
// order, stream, offset and round, below) and keeps the last of them
// (liveKeepMax) until the order ends, so that a NATS restart loses none
// of them unless the order printed more than that before the restart was
// seen. The live stream is a memory stream: a restart of its server loses it with every chunk it held, and the chunks a worker
// publishes until an API makes it again (Mend, about a second) go
// into no stream; a worker may not make it (its NATS permissions), nor
// read whether it is there. What a worker can see is its connection's
// reconnect, which every restart of its server makes, and the answer to
// a JetStream publish: one chunk a second at most is published with a
// reply (an asynchronous PubAck, never waited for in Publish), so a
// stream lost without a reconnect (serve's JetStream restarted in place,
// a stream removed) is seen too, by an answer that is an error or none
// within liveMendTimeout, or that names a stream sequence at or below
// one acknowledged before (the stream made again meanwhile: sequences
// start again at 1, and only grow within one stream; a stream made again
// that took more messages between two of these chunks than the lost one
// held before the first is not told). After either, it stops publishing new chunks,
// and publishes what it keeps again from the start with JetStream
// publishes, each waiting for the stream's acknowledgement (tried again
// every liveMendEvery until the stream is there again), and the chunks
// printed meanwhile after them, in the order they came, so each stream's
// chunks reach the live stream in offset order; then goes on as before.
// The first of them rolls up the order's subject: chunks the stream took
// before the loss was seen (once an API made it again) are purged, and
// the stream holds each of the order's chunks once, in order.
// A stream that was not lost (a cluster's, kept by its replicas; a
// connection cut alone) is rolled up alike and holds each chunk once
// after it; a follower who read them before, placing chunks by offset,
// drops the repeats. A chunk published again after an acknowledgement
// that did not come is dropped by the stream as a duplicate (its
// Nats-Msg-Id, within the stream's 2 minutes).
//
// Nothing is kept, started or allocated until the first chunk: an order
// without output costs nothing more. Kept is at most what is published,
// which stops at the order's output cap. Publish is called from the
// output's goroutines (one per stream); Stop once the process ended,
// before the output's roll-up (EndOutput). The zero value is ready.
type LiveOutput struct {
	st atomic.Pointer[liveState]
}

// liveState is a LiveOutput's from its first chunk on.
type liveState struct {
	q    *Queue
	subj string // the order's output subject
	// run: unique to this run of the order, for the chunks' Nats-Msg-Id:
	// an idempotent order run again after its worker stopped has the
	// same id, and its chunks the same offsets, and the stream dropped
	// them as duplicates of the lost run's.
	run string
	mu  sync.Mutex
	// kept: the last chunks published, at most liveKeepMax bytes of them
	// (keptBytes) but the last; first: how many were dropped before them.
	kept      []liveChunk
	keptBytes int
	first     int
	seen      uint64 // the connection's reconnect count the chunks were published under
	// probe: the answer to the last chunk published with a reply, sent at
	// probed; nil once it came.
	probe  jetstream.PubAckFuture
	probed time.Time
	// acked: the highest stream sequence an acknowledgement named.
	acked   uint64
	mending bool // kept chunks are being published again: new ones wait
	// round: how many times the kept chunks were published again, in
	// each chunk's Nats-Msg-Id (mend).
	round int
	stop  context.CancelFunc
	done  chan struct{}
}

// liveChunk is one chunk of LiveOutput, kept as it was published.
type liveChunk struct {
	stream string
	offset int64
	data   []byte
}

// liveKeepMax bounds what a LiveOutput keeps: the chunks of the last
// MiB it published (the last chunk whatever its size). What an order
// printed while ORDERLY_LIVE was gone is well within it unless the order
// prints more than a MiB in the second or two a restart takes; a follower
// who comes after the restart sees the output before what was kept as a
// hole, and the whole of it once the result is stored. Keeping all of it
// (up to the output cap, 10 MiB by default) took serve past the 80 MiB a
// ?wait on 10 MiB of kept output may take (docs/benchmarks.md).
const liveKeepMax = 1 << 20

// liveMendEvery is how often a LiveOutput looks for a reconnect of its
// connection and for the answer to its last acknowledged chunk, and
// tries again to publish its chunks while the live stream does not
// acknowledge them.
const liveMendEvery = 250 * time.Millisecond

// liveProbeEvery is how often at most a chunk is published with a reply.
const liveProbeEvery = time.Second

// liveMendTimeout bounds the wait for one acknowledgement.
const liveMendTimeout = 2 * time.Second

// Publish sends one chunk of order id of host (PublishOutput's) and keeps
// a copy of it.
func (o *LiveOutput) Publish(q *Queue, host string, id uuid.UUID, stream string, offset int64, p []byte) error {
	s := o.st.Load()
	if s == nil {
		// The first chunk: only now is there something to keep, and to
		// publish again after a reconnect.
		s = &liveState{q: q, subj: OutputSubjectOf(host, id), run: nats.NewInbox()[len(nats.InboxPrefix):],
			seen: q.nc.Stats().Reconnects}
		if !o.st.CompareAndSwap(nil, s) {
			s = o.st.Load() // the other stream's first chunk came first
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop, s.done = cancel, make(chan struct{})
		go s.watch(ctx)
	}
	c := liveChunk{stream: stream, offset: offset, data: bytes.Clone(p)}
	s.keep(c)
	if s.mending {
		return nil
	}
	if r := s.q.nc.Stats().Reconnects; r != s.seen {
		// Reconnected since the last chunk: the live stream may have
		// lost them all. The watch publishes this one with them.
		s.seen, s.mending = r, true
		return nil
	}
	var err error
	if s.probe == nil && time.Since(s.probed) >= liveProbeEvery {
		var f jetstream.PubAckFuture
		if f, err = s.q.js.PublishMsgAsync(s.msg(c)); err == nil {
			s.probe, s.probed = f, time.Now()
		}
	} else {
		err = s.q.nc.PublishMsg(s.msg(c))
	}
	if err != nil {
		// Not sent (the reconnect buffer full, the connection closed):
		// the watch publishes it again with the others.
		s.mending = true
	}
	return err
}

// keep adds c to what is kept, and drops the oldest chunks past
// liveKeepMax. Under s.mu.
func (s *liveState) keep(c liveChunk) {
	s.kept = append(s.kept, c)
	s.keptBytes += len(c.data)
	n := 0
	for s.keptBytes > liveKeepMax && n < len(s.kept)-1 {
		s.keptBytes -= len(s.kept[n].data)
		n++
	}
	if n > 0 {
		clear(s.kept[:n])
		s.kept = s.kept[n:]
		s.first += n
	}
}

// Stop ends the watch, a publishing again under way included: the
// order's result in PostgreSQL has its whole output now (what a follower
// is given once it is stored). It returns once the watch publishes no
// more, so nothing of it follows the roll-up.
func (o *LiveOutput) Stop() {
	s := o.st.Load()
	if s == nil {
		return
	}
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}

// watch notices a reconnect, or a probe answered with an error or not in
// time, while no chunk comes, and publishes the kept chunks again after
// one.
func (s *liveState) watch(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(liveMendEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if r := s.q.nc.Stats().Reconnects; r != s.seen {
			s.seen, s.mending = r, true
		}
		if s.probe != nil {
			select {
			case ack := <-s.probe.Ok():
				// A stream's sequences only grow: one at or below the
				// last acknowledged is of another stream, made again
				// since (by an API, before this chunk came).
				if ack.Sequence <= s.acked {
					s.mending = true
				}
				s.probe, s.acked = nil, ack.Sequence
			case <-s.probe.Err():
				s.probe, s.mending = nil, true
			default:
				if time.Since(s.probed) >= liveMendTimeout {
					s.probe, s.mending = nil, true
				}
			}
		}
		mending := s.mending
		s.mu.Unlock()
		if mending && !s.mend(ctx) {
			return
		}
	}
}

// mend publishes every kept chunk again, in the order they came, each
// acknowledged by the live stream before the next, from the first again
// after another reconnect; then lets Publish go on with the new ones.
// false: ctx ended first. j counts chunks from the order's first, so
// that chunks dropped meanwhile (keep) are skipped.
func (s *liveState) mend(ctx context.Context) bool {
	tried := false       // chunk j was published in this round and not acknowledged
	j, start := -1, true // start: chunk j is the first of its round
	for {
		s.mu.Lock()
		if r := s.q.nc.Stats().Reconnects; r != s.seen {
			s.seen, j, tried = r, -1, false // lost again, perhaps with what was published
		}
		switch {
		case j < 0:
			j, start = s.first, true
		case j < s.first:
			// Dropped while this round published the chunks before
			// them (keep): lost, a hole after those.
			j = s.first
		}
		if j == s.first+len(s.kept) {
			s.mending = false
			s.mu.Unlock()
			return true
		}
		if start && !tried {
			s.round++
		}
		c := s.kept[j-s.first]
		m := s.msg(c)
		s.mu.Unlock()
		if start {
			// The first purges the order's chunks that the stream took
			// before the loss was seen (after the stream was made again,
			// or flushed from the reconnect buffer into it), which would
			// stand before their earlier ones. Its round in the
			// Nats-Msg-Id: the chunks purged must not be dropped as
			// duplicates when they come again.
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		}
		pctx, cancel := context.WithTimeout(ctx, liveMendTimeout)
		ack, err := s.q.js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			s.mu.Lock()
			s.acked = max(s.acked, ack.Sequence)
			s.mu.Unlock()
			j, tried, start = j+1, false, false
			continue
		}
		tried = true
		// No stream yet (no responders), or no answer: again in a while.
		select {
		case <-ctx.Done():
			return false
		case <-time.After(liveMendEvery):
		}
	}
}

// msg is chunk c's message.
func (s *liveState) msg(c liveChunk) *nats.Msg {
	m := nats.NewMsg(s.subj)
	off := strconv.FormatInt(c.offset, 10)
	m.Header.Set(StreamHeader, c.stream)
	m.Header.Set(OffsetHeader, off)
	m.Header.Set(nats.MsgIdHdr, s.run+"."+c.stream+"."+off+"."+strconv.Itoa(s.round))
	m.Data = c.data
	return m
}
