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
// order, stream, offset and round, below) and publishes them again after
// a NATS restart from the order's output as the executor holds it (its
// LiveSource), so that a restart loses none of what the executor keeps
// for the result: all of a stream up to the output cap, and past it its
// head and its latest bytes. The live stream is a memory stream: a restart of its server loses it with every chunk it held, and the chunks a worker
// publishes until an API makes it again (Mend, about a second) go
// into no stream; a worker may not make it (its NATS permissions), nor
// read whether it is there. What a worker can see is its connection's
// reconnect, which every restart of its server makes, and the answer to
// a JetStream publish: one chunk a second at most is published with a
// reply (an asynchronous PubAck, never waited for in Publish), so a
// stream lost without a reconnect (serve's JetStream restarted in place,
// a stream removed) is seen too, by an answer that is an error or none
// within liveMendTimeout, or that names a stream sequence lower than the
// one acknowledged before plus the chunks sent since (a stream takes
// each, one sequence each: a lower one is of a stream made again
// meanwhile, whose sequences start again at 1 and which took only the
// chunks sent after the loss; a stream made again that took more of
// other orders' messages meanwhile than the lost one held before the
// acknowledged chunk is not told). After either, it stops publishing new chunks,
// and publishes each stream again from offset 0 up to where its last
// chunk ended, read from the source, with JetStream publishes, each
// waiting for the stream's acknowledgement (tried again every
// liveMendEvery until the stream is there again), the chunks printed
// meanwhile included, each stream's bytes in offset order; then goes on
// as before. Bytes the source no longer holds (an output past its cap,
// whose tail ring the latest bytes overwrote) are skipped: the next
// chunk's offset says where it starts, a hole exactly where the stored
// result has its truncation marker.
// The stream takes no rollups (liveConfig), so what it took before the
// loss was seen stays: chunks the stream took once an API made it again
// (flushed from the reconnect buffer), and, on a stream that was not lost
// (a cluster's, kept by its replicas; a connection cut alone), the
// chunks before. Each round has its number in the chunks' Nats-Msg-Id
// (msg): a reader that keeps only the newest round of the newest run
// (PartialOutput) reads each byte once, in order; a follower, placing
// chunks by offset, drops the repeats. A chunk published again after an
// acknowledgement that did not come is dropped by the stream as a
// duplicate (its Nats-Msg-Id, within the stream's 2 minutes).
//
// Nothing is kept, started or allocated until the first chunk: an order
// without output costs nothing more. Nothing is copied per chunk either:
// what is published again is read from the source when it is (one
// buffer of liveMendChunk while a loss is mended), and only the probe's
// chunk, which the asynchronous publish holds for its retries, is a
// copy. Publish is called from the output's goroutines (one per stream),
// once the source holds the chunk; Stop once the process ended, before
// the result is stored. The zero value is ready.
type LiveOutput struct {
	// Attempt is the attempt of the order that runs (0: not said),
	// set before the first chunk: its run's chunks name it (liveRun),
	// so the output an interrupted attempt keeps is its own and not
	// an earlier attempt's (PartialOutput).
	Attempt int
	st      atomic.Pointer[liveState]
}

// Published reports whether l published a chunk, or tried to: whether
// the live stream may hold output of the order (Event.Alone).
func (l *LiveOutput) Published() bool {
	return l.st.Load() != nil
}

// liveState is a LiveOutput's from its first chunk on.
type liveState struct {
	q    *Queue
	src  LiveSource
	subj string // the order's output subject
	// run: unique to this run of the order, for the chunks' Nats-Msg-Id:
	// an idempotent order run again after its worker stopped has the
	// same id, and its chunks the same offsets, and the stream dropped
	// them as duplicates of the lost run's.
	run string
	mu  sync.Mutex
	// streams: how far each stream was published, in the order of their
	// first chunks: what mend publishes again.
	streams []liveStream
	seen    uint64 // the connection's reconnect count the chunks were published under
	// probe: the answer to the last chunk published with a reply, sent at
	// probed; nil once it came.
	probe  jetstream.PubAckFuture
	probed time.Time
	// acked: the highest stream sequence an acknowledgement named.
	acked uint64
	// sent: how many chunks Publish sent (the probes among them);
	// probeSent and ackedSent: sent once the probe, and the chunk
	// acknowledged with acked, went. A stream that took every chunk sent
	// from that one to the probe numbers the probe at least
	// probeSent-ackedSent past acked (watch).
	sent, probeSent, ackedSent uint64

	mending bool // the streams are being published again: new chunks wait
	// capped: the live output cap the chunk of capStream ending at capEnd
	// reached (LiveCapHeader on it, published again with it); 0: none.
	capped    int64
	capStream string
	capEnd    int64
	// round: how many times the streams were published again, in each
	// chunk's Nats-Msg-Id (mend).
	round int
	stop  context.CancelFunc
	done  chan struct{}
}

// liveStream is one stream of a LiveOutput: its name and the offset past
// its last chunk.
type liveStream struct {
	name string
	end  int64
}

// LiveSource holds what a LiveOutput published, for it to publish again
// after a loss: the executor's capture of the running order's streams
// (executor.Captured), so that no chunk is copied to be kept.
type LiveSource interface {
	// ReadOutput copies to p the bytes of stream from offset off on, as
	// many in a row as it holds and p takes, and returns the offset of
	// the first one copied: off, or past it when it no longer holds the
	// bytes from off (an output past its cap keeps its head and its
	// latest bytes), and how many it copied, 0 when it holds none from
	// off on. It is called while the stream is still written.
	ReadOutput(stream string, off int64, p []byte) (from int64, n int)
}

// LiveChunkMax is the most output one live chunk should carry: the
// executor reads a pipe this much at a time, and a chunk published again
// holds as much (liveMendChunk). nats-server's memory store keeps each
// message in one allocation of its headers and data, so a chunk is held
// in the live stream until its order ends (the API frees it then) at the
// size Go allocates for that: a whole 32 KiB of data plus the chunk's
// headers (under 200 bytes: the stream, the offset, the Nats-Msg-Id, the
// cap) is past the largest size class and takes five 8 KiB pages, 40 KiB
// for 32 KiB. 10 MiB of output held 12.5 MiB in the stream, at the moment
// serve's memory is highest (docs/benchmarks.md, "thirty-first round:
// memory"). 512 bytes less leaves room for the headers within 32 KiB.
const LiveChunkMax = 32<<10 - 512

// liveMendChunk is the most a chunk published again holds: the size of
// the executor's reads of a pipe, the chunks Publish is given.
const liveMendChunk = LiveChunkMax

// liveMendEvery is how often a LiveOutput looks for a reconnect of its
// connection and for the answer to its last acknowledged chunk, and
// tries again to publish its chunks while the live stream does not
// acknowledge them.
const liveMendEvery = 250 * time.Millisecond

// liveProbeEvery is how often at most a chunk is published with a reply.
const liveProbeEvery = time.Second

// liveMendTimeout bounds the wait for one acknowledgement.
const liveMendTimeout = 2 * time.Second

// Publish sends one chunk of order id of host (PublishOutput's), which
// src holds from now on, to be published again from it after a loss.
// p is not retained.
func (o *LiveOutput) Publish(q *Queue, src LiveSource, host string, id uuid.UUID, stream string, offset int64, p []byte) error {
	return o.publish(q, src, host, id, stream, offset, p, 0)
}

// PublishLast is Publish for the chunk that reached the order's live
// output cap (limit bytes of stdout and stderr together): it carries
// LiveCapHeader, published again with it after a loss, and nothing of
// the order is published after it.
func (o *LiveOutput) PublishLast(q *Queue, src LiveSource, host string, id uuid.UUID, stream string, offset int64, p []byte, limit int64) error {
	return o.publish(q, src, host, id, stream, offset, p, limit)
}

func (o *LiveOutput) publish(q *Queue, src LiveSource, host string, id uuid.UUID, stream string, offset int64, p []byte, limit int64) error {
	s := o.st.Load()
	if s == nil {
		// The first chunk: only now is there something to publish again
		// after a reconnect.
		s = &liveState{q: q, src: src, subj: OutputSubjectOf(host, id), run: liveRun(o.Attempt),
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
	s.published(stream, offset+int64(len(p)))
	if limit > 0 {
		s.capped, s.capStream, s.capEnd = limit, stream, offset+int64(len(p))
	}
	if s.mending {
		return nil // the watch publishes it from src with the others
	}
	if r := s.q.nc.Stats().Reconnects; r != s.seen {
		// Reconnected since the last chunk: the live stream may have
		// lost them all. The watch publishes this one with them.
		s.seen, s.mending = r, true
		return nil
	}
	var err error
	if s.probe == nil && time.Since(s.probed) >= liveProbeEvery {
		// A copy: the asynchronous publish keeps its message, when p is
		// another chunk's. Never sent again by itself: its "no
		// responders" is the loss told (the watch publishes the chunk
		// again with the round), and a copy jetstream sent again 250 or
		// 500 ms later would land in a stream made again meanwhile as a
		// chunk of the round before, among or after the new round's.
		var f jetstream.PubAckFuture
		if f, err = s.q.js.PublishMsgAsync(s.msg(stream, offset, bytes.Clone(p), limit), jetstream.WithRetryAttempts(0)); err == nil {
			s.sent++
			s.probe, s.probed, s.probeSent = f, time.Now(), s.sent
		}
	} else if err = s.q.nc.PublishMsg(s.msg(stream, offset, p, limit)); err == nil {
		s.sent++
	}
	if err != nil {
		// Not sent (the reconnect buffer full, the connection closed):
		// the watch publishes it again with the others.
		s.mending = true
	}
	return err
}

// published records that stream was published up to end. Under s.mu.
func (s *liveState) published(stream string, end int64) {
	for i := range s.streams {
		if s.streams[i].name == stream {
			s.streams[i].end = max(s.streams[i].end, end)
			return
		}
	}
	s.streams = append(s.streams, liveStream{name: stream, end: end})
}

// Stop ends the watch, a publishing again under way included: the
// order's result in PostgreSQL has its whole output now (what a follower
// is given once it is stored). It returns once the watch publishes no
// more, so nothing of it follows the finished event (after which the
// API frees the order's messages: FreeLive).
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
// time, while no chunk comes, and publishes the streams again after
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
				// A stream's sequences only grow, by one for each
				// message it takes, and it takes every chunk sent on a
				// live connection (no limit refuses one: liveConfig).
				// So a stream that took every chunk sent since the one
				// acknowledged last numbers this one at least that many
				// past it; below, it is another stream, made again
				// since (by an API, before this chunk came), that took
				// only the chunks sent after the loss, or a stream that
				// lost some. Only "at or below the last acknowledged"
				// was looked at before: after one acknowledgement of a
				// sequence n (an order's first chunk, on a quiet
				// stream, is 1), a stream made again that took more
				// than n chunks before the probe was not told.
				if s.probeSent > s.ackedSent {
					if ack.Sequence < s.acked+(s.probeSent-s.ackedSent) {
						s.mending = true
					}
					s.acked, s.ackedSent = ack.Sequence, s.probeSent
				} // else sent before the chunks that mend had acknowledged: they tell more
				s.probe = nil
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

// mend publishes each stream again from offset 0 up to where its last
// chunk ended, read from the source, each chunk acknowledged by the live
// stream before the next, from the start again after another reconnect;
// then lets Publish go on with the new ones. false: ctx ended first.
// The chunks printed meanwhile move a stream's end, and are published
// with it; the bytes the source no longer holds are skipped (a hole,
// told by the next chunk's offset), and a chunk is read when it is
// published, so the source's tail ring never has it overwritten under
// the publish.
func (s *liveState) mend(ctx context.Context) bool {
	buf := make([]byte, liveMendChunk)
	var at []int64  // per stream: how far this round published it; nil: a round starts
	var m *nats.Msg // a chunk of this round published and not acknowledged
	i := 0          // m's stream
	for {
		s.mu.Lock()
		if r := s.q.nc.Stats().Reconnects; r != s.seen {
			s.seen, at, m = r, nil, nil // lost again, perhaps with what was published
		}
		if at == nil {
			at = make([]int64, 0, 2)
			s.round++
			// The sequences acknowledged before were perhaps of the lost
			// stream: kept, the first probe after the round (the stream
			// made again numbers from 1) read as another loss, and the
			// order's output was published a second time, each loss. The
			// rollup of the second round hid the first.
			s.acked, s.ackedSent = 0, s.sent
		}
		for len(at) < len(s.streams) {
			at = append(at, 0) // its first chunk came meanwhile
		}
		var name string
		var end int64
		capStream, capEnd, capped := s.capStream, s.capEnd, s.capped
		if m == nil {
			for i = 0; i < len(at) && at[i] >= s.streams[i].end; i++ {
			}
			if i == len(at) {
				s.mending = false
				s.mu.Unlock()
				return true
			}
			name, end = s.streams[i].name, s.streams[i].end
		}
		s.mu.Unlock()
		if m == nil {
			from, n := s.src.ReadOutput(name, at[i], buf)
			if n = int(min(int64(n), end-from)); n <= 0 {
				at[i] = end // the source holds nothing more of what was published
				continue
			}
			var limit int64 // the chunk that reached the cap says so again
			if capped > 0 && name == capStream && from+int64(n) == capEnd {
				limit = capped
			}
			m = s.msg(name, from, buf[:n], limit)
		}
		pctx, cancel := context.WithTimeout(ctx, liveMendTimeout)
		ack, err := s.q.js.PublishMsg(pctx, m)
		cancel()
		if err == nil {
			s.mu.Lock()
			// Publish sends nothing while a round is under way: sent
			// is where the chunks published after it count from.
			s.acked, s.ackedSent = max(s.acked, ack.Sequence), s.sent
			s.mu.Unlock()
			off, _ := strconv.ParseInt(m.Header.Get(OffsetHeader), 10, 64)
			at[i], m = off+int64(len(m.Data)), nil
			continue
		}
		// No stream yet (no responders), or no answer: again in a while,
		// the same chunk (buf is not read into meanwhile).
		select {
		case <-ctx.Done():
			return false
		case <-time.After(liveMendEvery):
		}
	}
}

// msg is the message of the chunk of stream at offset; capped: the live
// output cap it reached (LiveCapHeader), 0 for none.
func (s *liveState) msg(stream string, offset int64, data []byte, capped int64) *nats.Msg {
	m := nats.NewMsg(s.subj)
	off := strconv.FormatInt(offset, 10)
	m.Header.Set(StreamHeader, stream)
	m.Header.Set(OffsetHeader, off)
	m.Header.Set(nats.MsgIdHdr, s.run+"."+stream+"."+off+"."+strconv.Itoa(s.round))
	if capped > 0 {
		m.Header.Set(LiveCapHeader, strconv.FormatInt(capped, 10))
	}
	m.Data = data
	return m
}
