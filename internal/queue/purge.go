package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultPurgeListEvery is how often PurgeAcked reads every host
// consumer of the orders stream, the backstop for a host whose consumer
// acknowledged orders this process did not publish (another API replica's,
// or its own before a restart). Between those it reads only the consumers
// of the hosts it published to.
const DefaultPurgeListEvery = 5 * time.Minute

// purgeMaxWait bounds, in rounds, how long PurgeAcked leaves a host it
// published to, and whose consumer acknowledged nothing since, before it
// looks again: with the default 5 s rounds, about the backstop's period.
const purgeMaxWait = 32

// marks are the hosts Publish sent orders to since PurgeAcked last took
// them, each with the highest stream sequence it got for the host. A
// publish costs a map write under a lock, and no allocation for a host
// already marked.
type marks struct {
	mu    sync.Mutex
	hosts map[string]uint64
	spare map[string]uint64 // the map taken last, emptied, for the next marks
}

func (m *marks) add(host string, seq uint64) {
	m.mu.Lock()
	if m.hosts == nil {
		m.hosts = map[string]uint64{}
	}
	if seq > m.hosts[host] {
		m.hosts[host] = seq
	}
	m.mu.Unlock()
}

// take returns the marks and starts a new set; done hands the map back.
func (m *marks) take() (hosts map[string]uint64, done func()) {
	m.mu.Lock()
	hosts, m.hosts, m.spare = m.hosts, m.spare, nil
	m.mu.Unlock()
	return hosts, func() {
		clear(hosts)
		m.mu.Lock()
		if m.hosts == nil {
			m.hosts = hosts
		} else {
			m.spare = hosts
		}
		m.mu.Unlock()
	}
}

// purgeState is what PurgeAcked keeps between rounds. Its mutex is held for
// a whole round.
type purgeState struct {
	mu sync.Mutex
	// purged: per host, how far its acknowledged orders were last purged.
	purged map[string]purgedTo
	// awaited: the hosts this process published to whose consumer has not
	// yet acknowledged up to the last order published.
	awaited map[string]awaited
	round   uint64
	// listed is when every consumer was last read; stream, the creation
	// time of the orders stream then.
	listed time.Time
	stream time.Time
}

// purgedTo is how far PurgeAcked purged a host's orders: up to the
// consumer's ack floor when its consumer-side floor (acked) was this, and
// for which of its consumers (a consumer created again counts from 0). The
// consumer-side floor moves only with acknowledgements: the stream-side
// one is also moved by the purge itself (nats-server sets the floor of a
// consumer whose subject a purge emptied to the stream's last sequence),
// so comparing it purged every purged host again at each round after
// which any order was published (docs/benchmarks.md, "The orders
// stream's purge at many hosts").
type purgedTo struct {
	created time.Time
	acked   uint64
}

// awaited is a host whose orders up to stream sequence seq were published
// here and not all acknowledged when last looked at: looked at again in
// round due, wait rounds after the previous look.
type awaited struct {
	seq, due, wait uint64
}

// PurgeAcked removes from a limits-retention orders stream each host's
// orders up to its consumer's ack floor: every one of them is
// acknowledged, so no consumer of the host would deliver it again except
// one created without the floor (a server restart lost the in-memory
// consumer), which the worker only acknowledges (PostgreSQL shows it
// finished). A work-queue stream needs none (its acks delete). It returns
// how many hosts' orders it purged.
//
// Its cost follows the fleet's activity, not its size: it reads the
// consumers of the hosts this process published to (Publish), each until
// its ack floor reaches the last order published, a host whose consumer
// acknowledges nothing being looked at after 1, 2, 4 … rounds, and purges
// those whose floor moved. Every Options.PurgeListEvery, at its first
// call, and after the stream was created again, it reads every consumer
// instead (one paged listing): what a missed mark would leave (another API
// replica's orders, acknowledged after it stopped; orders published
// before this process started) waits that long at most. A round with
// nothing to look at sends nothing.
func (q *Queue) PurgeAcked(ctx context.Context) (int, error) {
	p := &q.purge
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.purged == nil {
		p.purged, p.awaited = map[string]purgedTo{}, map[string]awaited{}
	}
	p.round++
	marked, done := q.marks.take()
	for host, seq := range marked {
		a := p.awaited[host]
		p.awaited[host] = awaited{seq: max(a.seq, seq), due: p.round, wait: 1}
	}
	done()
	full := p.listed.IsZero() || time.Since(p.listed) >= cmp.Or(q.opts.PurgeListEvery, DefaultPurgeListEvery)
	if !full && !p.anyDue() {
		return 0, nil
	}
	st, err := q.js.Stream(ctx, OrdersStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		clear(p.awaited)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", OrdersStream, err)
	}
	if st.CachedInfo().Config.Retention != jetstream.LimitsPolicy {
		clear(p.awaited)
		return 0, nil
	}
	if created := st.CachedInfo().Created; !created.Equal(p.stream) {
		// Created again: its sequences restart, so the awaited ones mean
		// nothing; the listing finds what is acknowledged.
		clear(p.awaited)
		p.stream, full = created, true
	}
	if full {
		return q.purgeListed(ctx, st)
	}
	return q.purgeAwaited(ctx, st)
}

func (p *purgeState) anyDue() bool {
	for _, a := range p.awaited {
		if a.due <= p.round {
			return true
		}
	}
	return false
}

// purgeListed reads every consumer of st and purges each host whose floor
// moved.
func (q *Queue) purgeListed(ctx context.Context, st jetstream.Stream) (int, error) {
	p := &q.purge
	start := time.Now()
	floors := map[string]*jetstream.ConsumerInfo{}
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		host, ok := strings.CutPrefix(ci.Config.FilterSubject, OrdersSubject)
		if !ok || ci.Name != ConsumerName(host) {
			continue
		}
		floors[host] = ci
	}
	if err := lister.Err(); err != nil {
		return 0, fmt.Errorf("consumers of stream %s: %w", OrdersStream, err)
	}
	for host := range p.purged {
		if _, ok := floors[host]; !ok {
			delete(p.purged, host) // gone: its next consumer starts a new count
		}
	}
	for host := range p.awaited {
		if _, ok := floors[host]; !ok {
			// No consumer (no worker ever took the host, a typo): the
			// listing finds it once one acknowledges.
			delete(p.awaited, host)
		}
	}
	total := 0
	for host, ci := range floors {
		n, err := q.purgeHost(ctx, st, host, ci)
		if err != nil {
			return total, err
		}
		total += n
		if a, ok := p.awaited[host]; ok && ci.AckFloor.Stream >= a.seq {
			delete(p.awaited, host)
		}
	}
	p.listed = start
	return total, nil
}

// purgeAwaited reads the consumers of the awaited hosts due this round and
// purges each whose floor moved.
func (q *Queue) purgeAwaited(ctx context.Context, st jetstream.Stream) (int, error) {
	p := &q.purge
	total := 0
	for host, a := range p.awaited {
		if a.due > p.round {
			continue
		}
		var ci *jetstream.ConsumerInfo
		c, err := q.js.Consumer(ctx, OrdersStream, ConsumerName(host))
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			// Its worker has not created it yet (or nats-server lost it).
		case err != nil:
			return total, fmt.Errorf("consumer of host %s: %w", host, err)
		default:
			ci = c.CachedInfo()
		}
		n := 0
		if ci != nil {
			if n, err = q.purgeHost(ctx, st, host, ci); err != nil {
				return total, err
			}
		}
		total += n
		switch {
		case ci != nil && ci.AckFloor.Stream >= a.seq:
			delete(p.awaited, host)
		case n > 0:
			p.awaited[host] = awaited{seq: a.seq, due: p.round + 1, wait: 1}
		default: // nothing acknowledged since: look less often
			wait := min(2*a.wait, purgeMaxWait)
			p.awaited[host] = awaited{seq: a.seq, due: p.round + wait, wait: wait}
		}
	}
	return total, nil
}

// purgeHost purges host's orders up to the ack floor of its consumer ci,
// unless that consumer acknowledged nothing since the last look or none
// of them is still stored; it returns 1 when it purged.
func (q *Queue) purgeHost(ctx context.Context, st jetstream.Stream, host string, ci *jetstream.ConsumerInfo) (int, error) {
	p := &q.purge
	to := purgedTo{created: ci.Created, acked: ci.AckFloor.Consumer}
	if ci.AckFloor.Stream == 0 {
		return 0, nil
	}
	if last, ok := p.purged[host]; ok && last.created.Equal(to.created) && last.acked == to.acked {
		return 0, nil
	}
	// Nothing of the host's stored at or below the floor (another API
	// replica purged it first; it had nothing): no purge. nats-server's
	// purge walks every consumer of the stream, an empty one 0.3 ms of CPU
	// at 1,000 host consumers and 3.9 ms at 5,000, where reading the
	// host's first message takes 0.1 ms (docs/benchmarks.md, "The orders
	// stream's purge at many hosts").
	if st.CachedInfo().State.FirstSeq > ci.AckFloor.Stream {
		p.purged[host] = to
		return 0, nil
	}
	first, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(OrdersSubject+host))
	if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && first.Sequence > ci.AckFloor.Stream {
		p.purged[host] = to
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("first order of host %s: %w", host, err)
	}
	// Up to, not including, floor+1: only the host's own messages.
	err = st.Purge(ctx, jetstream.WithPurgeSubject(OrdersSubject+host), jetstream.WithPurgeSequence(ci.AckFloor.Stream+1))
	if err != nil {
		return 0, fmt.Errorf("purge the acknowledged orders of host %s: %w", host, err)
	}
	p.purged[host] = to
	return 1, nil
}
