package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LiveStream keeps each order's live output chunks and status events for a
// while, so any API replica can replay them to an SSE client and resume
// after a reconnect. It is a memory stream: PostgreSQL holds the lasting
// record, and live output must never slow the order stream's fsyncs.
const LiveStream = "ORDERLY_LIVE"

// StreamHeader names the stream ("stdout" or "stderr") of an output chunk,
// and OffsetHeader where in that stream the chunk starts (bytes before
// it), so a follower can tell a gap or a repeat from the chunk itself:
// stream sequences start again when a memory stream is lost.
//
// LiveCapHeader marks the chunk that reached the order's live output cap
// (worker.max_output_bytes, for stdout and stderr together; its value):
// the worker publishes nothing of the order after it, so a follower can
// tell live output that stopped at the cap from live output the message
// bus lost, when the stored copy at the order's end holds more than came
// live.
const (
	StreamHeader  = "Orderly-Stream"
	OffsetHeader  = "Orderly-Offset"
	LiveCapHeader = "Orderly-Live-Cap"
)

// liveMaxAge is how long the live stream keeps a message at the most.
const liveMaxAge = time.Hour

// liveSubjects are the live stream's: every output subject, and the
// event subjects of four tokens only, orderly.events.<host>.<id>, not the
// ends told to the API's freeing on orderly.events.<host>.<id>.free
// (FreeSubjectOf), which nobody reads back. Releases before 2026-12-06
// (night) took orderly.events.>; ensure and Mend set them back.
var liveSubjects = []string{OutputSubject + ">", EventsSubject + "*.*"}

func liveConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        LiveStream,
		Description: "live output chunks and status events per order, for SSE replay",
		Subjects:    liveSubjects,
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.MemoryStorage,
		Replicas:    replicas,
		MaxAge:      liveMaxAge,
		MaxBytes:    256 << 20,
		Discard:     jetstream.DiscardOld,
		// No rollups: a rollup header cannot be limited to one subject,
		// and any worker may publish on its own output subject, so
		// `Nats-Rollup: all` there purged every host's live output. The
		// API purges a finished order's messages instead (FreeLive), and
		// the finished event expires after Options.FinishedTTL. Set
		// false, not left out: an existing stream made with rollups is
		// updated (ensure, Mend).
		AllowRollup: false,
		AllowMsgTTL: true,
		// Each follower reads through a consumer of its own (Live), and
		// nats-server caps a stream that sets no cap at 1,000 consumers
		// (its default_max_consumers): the 1,001st SSE follower was
		// refused (503) on a nats-server of an operator's own. As the
		// orders stream (ordersMaxConsumers); putLiveStream keeps a
		// stream's own where the server cannot change it.
		MaxConsumers: ordersMaxConsumers,
	}
}

// putLiveStream creates the live stream, or updates it to liveConfig,
// with its cap on consumers lifted where nats-server allows: one before
// 2.14 cannot change a stream's cap (the stream keeps its own; such a
// server sets no default cap), and an account that caps consumers
// refuses a stream with a higher cap (the stream then sets none, and the
// account's cap holds), as ensureOrdersStream does for the orders stream.
func (q *Queue) putLiveStream(ctx context.Context) (jetstream.Stream, error) {
	cfg := liveConfig(q.opts.Replicas)
	s, err := q.js.CreateOrUpdateStream(ctx, cfg)
	switch {
	case capUnchangeable(err):
		old, serr := q.js.Stream(ctx, LiveStream)
		if serr != nil {
			return nil, err
		}
		cfg.MaxConsumers = old.CachedInfo().Config.MaxConsumers
		s, err = q.js.CreateOrUpdateStream(ctx, cfg)
	case apiErrorCode(err) == errCodeMaximumConsumers:
		cfg.MaxConsumers = -1
		s, err = q.js.CreateOrUpdateStream(ctx, cfg)
	}
	return s, err
}

// PublishOutput sends one chunk of the stdout or stderr of order id of
// host, which starts offset bytes into that stream, on the host's own
// output subject (the only one its worker may publish to). It does not
// wait for an acknowledgement: live output is best effort and the order's
// result in PostgreSQL is complete regardless.
func (q *Queue) PublishOutput(host string, id uuid.UUID, stream string, offset int64, p []byte) error {
	m := nats.NewMsg(OutputSubjectOf(host, id))
	m.Header.Set(StreamHeader, stream)
	m.Header.Set(OffsetHeader, strconv.FormatInt(offset, 10))
	m.Data = p // PublishMsg copies it into the connection's buffer before returning
	return q.nc.PublishMsg(m)
}

// Live follows the live messages of order id of host, starting after
// sequence after (0: from the beginning). Only host's subjects are read,
// so output another host's worker publishes for this order never reaches
// a follower.
//
// It reads through a push consumer of its own over a plain subscription
// (LiveFeed), not nats.go's ordered consumer: the worker of host can
// store on these subjects a message with an empty body and a Status
// header, which nats.go takes for the server's status message. It never
// handed one over, and recreated its consumer at it, again and again:
// the follower took nothing more of the order, and its replica sent
// NATS some thousand consumer creations a second for as long as the
// follower stayed.
func (q *Queue) Live(ctx context.Context, host string, id uuid.UUID, after uint64) (*LiveFeed, error) {
	// The stream's creation time, as the stream reports it, tells the
	// feed later whether the stream it reads is still this one
	// (LiveFeed.renewed). Asked before the consumer is made: a stream
	// made again between the two is then taken for made again at the
	// feed's next restart (its start read again), never the other way
	// (its start skipped).
	// A NATS restart that lost the memory stream with no feed open
	// across it to make it again (restart's renewed) is made good here
	// too, or every follower was refused (the SSE stream's 503), and the
	// workers' chunks went nowhere, until an API started. Resumed after
	// an id, that id is of the lost stream (below).
	st, err := q.liveStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("follow order %s: %w", id, err)
	}
	// Every id of a stream is at most its last sequence: a larger one (a
	// client's Last-Event-ID from before a NATS restart lost the stream)
	// is of a stream that is gone, and all this one holds of the order
	// came after it. (Once the new stream has passed the old id, it
	// cannot be told; the follower places chunks by their offsets.) What
	// the order printed in between is lost, as for a feed that finds its
	// stream made again: LiveLost comes first.
	lost := false
	if after > 0 && st.CachedInfo().State.LastSeq < after {
		after, lost = 0, true
	}
	f := &LiveFeed{q: q, filter: []string{OutputSubjectOf(host, id), EventSubjectOf(host, id)}, sseq: after,
		made: st.CachedInfo().Created, lost: lost}
	if err := f.start(ctx); err != nil {
		if apiErrorCode(err) == errCodeMaximumConsumers {
			err = fmt.Errorf("%w: %w", ErrLiveFull, err)
		}
		return nil, fmt.Errorf("follow order %s: %w", id, err)
	}
	return f, nil
}

// ErrLiveFull is in Live's error when the live stream refused the
// follower's consumer for a cap on consumers: an account's
// max_consumers, or nats-server's default of 1,000 on a stream that
// could not take its own cap (putLiveStream). Others' followers ending
// make room.
var ErrLiveFull = errors.New("the live stream is at its cap on consumers (one per follower)")

// LiveFeed is a reading of an order's live messages (Live). Next is
// called from one goroutine; Stop from any.
//
// A message the server delivers from the stream always comes with a
// reply subject under $JS.ACK., which nobody who publishes can set, and
// is handed over whatever its headers; the server's own messages on the
// subscription (idle heartbeats, flow control requests) come without.
// The consumer is made again after the last sequence handed over when
// the server says it delivered more than came (a gap), or falls silent
// for three heartbeats (a NATS restart lost it).
type LiveFeed struct {
	q      *Queue
	filter []string
	dseq   uint64 // consumer sequence of the last message handed over
	sseq   uint64 // stream sequence of the last message handed over
	// made is the live stream's creation time as the stream reported it
	// when the feed last looked: compared for equality only, never with
	// another server's clock (renewed).
	made time.Time
	// stamp is the stored time of the message at sseq, as the stream
	// reported it when the feed handed it over (zero: none handed over
	// since the feed started or resumed): compared for equality only
	// (renewed).
	stamp time.Time
	lost  bool // LiveLost is still to be handed over (Live's resume)

	mu      sync.Mutex
	sub     *feedSub
	name    string // the consumer's
	stopped bool
}

// feedSub is a feed's subscription to its consumer's deliveries: an
// asynchronous one whose handler hands each message over on in, one at a
// time, in order. Not nats.go's SubscribeSync: that allocates its queue,
// a channel of the connection's SubChanLen (65,536) messages, 512 KiB,
// up front, per subscription: an API process with 1,100 SSE followers
// held 550 MiB of them, empty (docs/decisions.md, hE22), where serve's
// whole soft memory limit is 48 MiB. nats.go queues an asynchronous
// subscription's messages in a list that grows with what is pending,
// under the same pending limits, and bounded here by the consumer's flow
// control, which Next answers only once it has read up to it.
type feedSub struct {
	sub *nats.Subscription
	in  chan *nats.Msg
	// quit is closed by unsubscribe: a handler waiting to hand a message
	// over gives up (nats.go runs the handlers of a subscription on one
	// goroutine, which would wait for ever). gone is closed once nats.go
	// is done with the subscription: unsubscribed, or its connection
	// closed, which Next must not wait three heartbeats to learn.
	quit, gone chan struct{}
	ending     sync.Once // of unsubscribe: Stop's and restart's may meet
}

// subscribeFeed makes a feedSub on inbox.
func (q *Queue) subscribeFeed(inbox string) (*feedSub, error) {
	fs := &feedSub{in: make(chan *nats.Msg), quit: make(chan struct{}), gone: make(chan struct{})}
	sub, err := q.nc.Subscribe(inbox, func(m *nats.Msg) {
		select {
		case fs.in <- m:
		case <-fs.quit:
		}
	})
	if err != nil {
		return nil, err
	}
	var once sync.Once
	sub.SetClosedHandler(func(string) { once.Do(func() { close(fs.gone) }) })
	fs.sub = sub
	return fs, nil
}

// unsubscribe ends fs; any number of calls, from any goroutine.
func (fs *feedSub) unsubscribe() {
	fs.ending.Do(func() {
		close(fs.quit)
		_ = fs.sub.Unsubscribe()
	})
}

// liveHeartbeat is how often a follower's consumer beats when it has
// nothing to send.
const liveHeartbeat = 5 * time.Second

// liveTryTimeout bounds the requests of one try of a feed's restart, as
// jetstream's default does a request whose context has no deadline.
const liveTryTimeout = 5 * time.Second

// start makes the feed's subscription and consumer, from after f.sseq.
func (f *LiveFeed) start(ctx context.Context) error {
	inbox := f.q.nc.NewInbox()
	sub, err := f.q.subscribeFeed(inbox)
	if err != nil {
		return err
	}
	cfg := jetstream.ConsumerConfig{
		DeliverSubject:    inbox,
		FilterSubjects:    f.filter,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		FlowControl:       true,
		IdleHeartbeat:     liveHeartbeat,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	}
	if f.sseq > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = f.sseq + 1
	}
	c, err := f.q.js.CreatePushConsumer(ctx, LiveStream, cfg)
	if err != nil {
		sub.unsubscribe()
		return err
	}
	f.mu.Lock()
	stopped := f.stopped
	if !stopped {
		f.sub, f.name, f.dseq = sub, c.CachedInfo().Name, 0
	}
	f.mu.Unlock()
	if stopped {
		sub.unsubscribe()
		f.deleteConsumer(c.CachedInfo().Name)
		return ErrLiveStopped
	}
	return nil
}

// ErrLiveStopped is Next's error once Stop was called.
var ErrLiveStopped = errors.New("live feed stopped")

// LiveLost is what Next (and Messages) hand over, in place of a message,
// when the feed found the live stream made again since it read it (a NATS
// restart lost the memory stream): what was published before that and
// not yet handed over is lost. The feed goes on from the new stream's
// start (its sequences start again), so nothing of it is skipped. It is
// no message of the stream (no subject, no metadata).
var LiveLost = &nats.Msg{}

// Next returns the next live message of the order, waiting for it until
// ctx ends or Stop is called.
func (f *LiveFeed) Next(ctx context.Context) (*nats.Msg, error) {
	for {
		f.mu.Lock()
		sub, stopped := f.sub, f.stopped
		f.mu.Unlock()
		if stopped {
			return nil, ErrLiveStopped
		}
		if f.lost {
			f.lost = false
			return LiveLost, nil
		}
		// The wait ends too when the connection drops: a NATS restart
		// loses the consumer (in memory), and the feed, hearing nothing
		// more, made it again only after its three heartbeats of
		// silence, 15 s of an order's output held back from its
		// followers after each restart (docs/decisions.md, hD22). Made
		// again at the drop, the requests wait for the new connection.
		var dropped <-chan struct{}
		if ep := f.q.drops.cur.Load(); ep != nil {
			dropped = ep.ctx.Done()
		}
		var m *nats.Msg
		cut := false
		silent := time.NewTimer(3 * liveHeartbeat)
		select {
		case m = <-sub.in:
		case <-sub.gone:
		case <-sub.quit:
		case <-silent.C:
		case <-dropped:
			cut = true
		case <-ctx.Done():
		}
		silent.Stop()
		switch {
		case m != nil:
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case isClosed(sub.quit):
			continue // Stop's: said at the top
		case isClosed(sub.gone) && !cut:
			return nil, nats.ErrConnectionClosed
		default:
			lost, err := f.restart(ctx) // silent, or dropped: the consumer was lost
			if err != nil {
				return nil, err
			}
			if lost {
				return LiveLost, nil
			}
			continue
		}
		if strings.HasPrefix(m.Reply, "$JS.ACK.") {
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Consumer != f.dseq+1 {
				lost, err := f.restart(ctx)
				if err != nil {
					return nil, err
				}
				if lost {
					return LiveLost, nil
				}
				continue
			}
			f.dseq, f.sseq, f.stamp = meta.Sequence.Consumer, meta.Sequence.Stream, meta.Timestamp
			return m, nil
		}
		// The server's: every message before it was taken, so a flow
		// control request is answered now.
		if strings.HasPrefix(m.Reply, "$JS.FC.") {
			_ = f.q.nc.Publish(m.Reply, nil)
			continue
		}
		if fc := m.Header.Get("Nats-Consumer-Stalled"); strings.HasPrefix(fc, "$JS.FC.") {
			_ = f.q.nc.Publish(fc, nil)
		}
		if last, err := strconv.ParseUint(m.Header.Get("Nats-Last-Consumer"), 10, 64); err == nil && last > f.dseq {
			lost, err := f.restart(ctx)
			if err != nil {
				return nil, err
			}
			if lost {
				return LiveLost, nil
			}
		}
	}
}

// restart makes the consumer again after the last message handed over,
// trying every second while NATS cannot, until ctx ends or Stop. lost
// reports that the live stream was made again since the feed's consumer
// was (renewed): the feed then starts from the new stream's beginning.
//
// Each try's requests get liveTryTimeout: a JetStream request sent as
// the connection comes back after a NATS restart can go unanswered, and
// with only ctx for a bound (a follower's with a deadline far off) it
// held the feed until ctx ended.
func (f *LiveFeed) restart(ctx context.Context) (lost bool, err error) {
	f.mu.Lock()
	sub, name := f.sub, f.name
	f.mu.Unlock()
	sub.unsubscribe()
	f.deleteConsumer(name)
	for {
		tctx, cancel := context.WithTimeout(ctx, liveTryTimeout)
		made, renewed, err := f.renewed(tctx)
		if err == nil {
			if renewed {
				lost, f.sseq, f.stamp, f.made = true, 0, time.Time{}, made
			}
			err = f.start(tctx)
		}
		cancel()
		if err == nil || errors.Is(err, ErrLiveStopped) {
			return lost, err
		}
		f.mu.Lock()
		stopped := f.stopped
		f.mu.Unlock()
		if stopped {
			return lost, ErrLiveStopped
		}
		select {
		case <-ctx.Done():
			return lost, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// renewed returns when the live stream was made, as the stream reports
// it, and whether it is another stream than the one the feed read: a
// NATS restart lost the memory stream, and with it what was published
// before the stream was made again. Another creation time than the feed
// saw (made) says so. The two are compared for equality
// only: a stream's creation time is one value, set once where the
// stream was made (in a cluster, by the meta leader of the moment) and
// reported alike by every server, while ordering it against another
// time (the consumer's, made by another server perhaps) held only while
// the servers' clocks agreed: a stream made again where the clock is
// behind looked older than the feed's consumer, and the feed skipped its
// start. Made only when the consumer has to be made again.
// A stream not there is made again by a queue that may create streams
// (the API's, serve's): otherwise no order's output would come live
// until an API started. A worker's queue cannot; it waits.
//
// A whole NATS cluster restarted at once keeps the stream's assignment
// on disk and makes the memory stream again from it, empty, with the
// assignment's creation time: the same time, another stream, whose
// sequences start again at 1. The feed's consumer, made after its old
// sequence, skipped what the new stream held below it, and the hole was
// never told. Such a stream is told by its content, clock-free too: a
// last sequence below the one the feed handed over last, or at that
// sequence another message (another stored time, which the stream's
// leader set once and every server reports alike) than the one handed
// over. Within one stream a sequence is never used twice: the message
// there is the one handed over or none (purged, aged out), which
// says nothing either way. One more request (the message's) per
// restart, none when no message was handed over since the feed started.
func (f *LiveFeed) renewed(ctx context.Context) (made time.Time, renewed bool, err error) {
	s, err := f.q.liveStream(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	info := s.CachedInfo()
	switch {
	case !info.Created.Equal(f.made):
		return info.Created, true, nil
	case f.sseq > 0 && info.State.LastSeq < f.sseq:
		return info.Created, true, nil
	case f.stamp.IsZero():
		return info.Created, false, nil
	}
	m, err := s.GetMsg(ctx, f.sseq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return info.Created, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	return info.Created, !m.Time.Equal(f.stamp), nil
}

// liveStream is the live stream, made again when it is not there by a
// queue that may create streams (the API's, serve's).
func (q *Queue) liveStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := q.js.Stream(ctx, LiveStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && q.creator {
		s, err = q.putLiveStream(ctx)
	}
	return s, err
}

// FollowRestarts has Mend look for the live stream also after each
// restart that restarts counts, one that keeps the connection: serve's
// embedded JetStream restarted in place once its store has room again
// (natsembed's JetStreamRestarts) loses the memory stream with no
// reconnect to say so.
func (q *Queue) FollowRestarts(restarts func() uint64) { q.restarts.Store(&restarts) }

// Messages hands the feed's messages over on a channel (LiveLost
// included, in its place), for a reader that waits on other things too
// (a ticker, its client), from a goroutine of its own that calls Next:
// the channel is closed when Next fails (the feed stopped) or ctx ends.
// The reader still stops the feed.
func (f *LiveFeed) Messages(ctx context.Context) <-chan *nats.Msg {
	msgs := make(chan *nats.Msg, 64)
	go func() {
		defer close(msgs)
		for {
			m, err := f.Next(ctx)
			if err != nil {
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return msgs
}

// Stop ends the feed and deletes its consumer. The server would remove
// it only after its InactiveThreshold: every follower that came and went
// (an SSE client closing its page, a ?wait timing out a CLI follow) held
// a consumer for another minute. Best effort: the threshold still removes
// one whose delete is lost.
func (f *LiveFeed) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	f.sub.unsubscribe()
	f.deleteConsumer(f.name)
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (f *LiveFeed) deleteConsumer(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = f.q.js.DeleteConsumer(ctx, LiveStream, name)
}
