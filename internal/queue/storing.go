package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// unansweredFor is how long a publish that went unanswered keeps the bus
// marked as not storing when no later one is answered: the reconciler
// publishes again every 5 s while orders wait to be queued (each waiting
// publishAckWait), so a server that stores nothing keeps the mark, and a
// replica that has nothing left to publish loses it.
const unansweredFor = 30 * time.Second

// ProbeEvery is how often the intake asks ProbeStoring whether a server
// that left a publish unanswered stores again.
const ProbeEvery = time.Second

// silencePingWait bounds the ping that tells, at the first unanswered
// publish of an episode, a server that answers nothing from one that
// answers but does not store. A server that stores nothing answers a
// ping within milliseconds; one that has not answered for the publish's
// whole wait and not within this either is silent (or too slow to tell
// apart from it). The publish's caller, which was waiting for an answer
// already, waits this much longer once an episode.
const silencePingWait = time.Second

// storing tracks whether nats-server acknowledges this process's order
// publishes. A separate nats-server whose JetStream store hit a full disk
// keeps the write error on each stream it hit until the stream is loaded
// again (a restart), even once the disk has room: it answers every
// request but the publish, which it logs and drops, so the connection and
// the streams look fine and only the publishes' PubAcks never come. A
// frozen server (SIGSTOP, a stall) or a network path that carries nothing
// while the connection stays open leaves the publishes unanswered too,
// until the client's pings drop the connection: it answers nothing, a
// ping included, which is what silent tells.
type storing struct {
	marked atomic.Bool // fast path: a publish went unanswered recently
	mu     sync.Mutex
	first  time.Time // the first unanswered publish since the last answered one
	last   time.Time // the latest
	count  int
	// silent: at the episode's first unanswered publish the server did
	// not answer a ping either (silencePingWait).
	silent bool
	// host and id are the latest unanswered publish's order, which
	// ProbeStoring sends again.
	host string
	id   uuid.UUID
}

// StoringStatus is what Storing says, for /v1/status.
type StoringStatus struct {
	Storing         bool       `json:"storing"`
	Unanswered      int        `json:"unanswered_publishes,omitempty"`
	UnansweredSince *time.Time `json:"unanswered_since,omitempty"`
	// silent: the server answered no ping either (storing.silent).
	silent bool
}

// published records a publish's outcome. Only a PubAck that did not come
// while the connection stayed up marks the bus: one lost to a reconnect,
// or given up by its caller, says nothing of the server's store.
func (q *Queue) published(caller context.Context, err error, reconnects uint64, host string, id uuid.UUID) {
	s := &q.storing
	if err == nil {
		if !s.marked.Load() {
			return
		}
		s.mu.Lock()
		n, since := s.count, s.first
		s.count, s.first, s.last = 0, time.Time{}, time.Time{}
		s.marked.Store(false)
		s.mu.Unlock()
		if n > 0 {
			q.logger().Info("nats-server acknowledges order publishes again", "unanswered", n,
				"unanswered_since", since.UTC().Format(time.RFC3339))
		}
		return
	}
	if caller.Err() != nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) ||
		!q.nc.IsConnected() || q.nc.Stats().Reconnects != reconnects {
		return
	}
	now := time.Now()
	s.mu.Lock()
	if s.count == 0 || now.Sub(s.last) > unansweredFor {
		s.count, s.first = 0, now
	}
	s.count++
	s.last = now
	s.host, s.id = host, id
	first := s.count == 1
	s.marked.Store(true)
	s.mu.Unlock()
	if !first {
		return
	}
	// Which of the two it is decides what the operator has to do: a full
	// store is mended on nats-server's disk, a silent server on its
	// process or the network. Before, a frozen server was blamed on a
	// full disk.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(caller), silencePingWait)
	start := time.Now()
	perr := q.nc.FlushWithContext(pctx)
	cancel()
	// A connection dropped during the ping (its own pings unanswered)
	// is silence too.
	silent := perr != nil
	s.mu.Lock()
	s.silent = silent
	s.mu.Unlock()
	if silent {
		q.logger().Error("nats-server acknowledged no order publish within "+publishAckWait.String()+
			" and answered no ping within "+silencePingWait.String()+" on a live connection: it does not answer "+
			"(the nats-server process stopped (SIGSTOP) or stalled, its machine overloaded, or the network to it "+
			"carrying nothing while the connection stays open), not a full store. Look at the nats-server process "+
			"and the network to it; clients drop the connection once their pings go unanswered and connect again. "+
			"The orders recorded meanwhile are queued by the reconciler, and /readyz answers 503 until it answers",
			"subject", OrdersSubject+"*")
		return
	}
	q.logger().Error("nats-server acknowledged no order publish within "+publishAckWait.String()+
		" on a live connection, though it answers (a ping in "+time.Since(start).Round(time.Millisecond).String()+
		"): it is not storing (its JetStream store's disk full, or full until lately: "+
		"nats-server keeps a stream's write error until it restarts). Give the store room, then restart "+
		"nats-server; the orders recorded meanwhile are queued by the reconciler, and /readyz answers 503 until then",
		"subject", OrdersSubject+"*")
}

// Storing reports an error while order publishes go unanswered on a live
// connection (none answered since, the latest within unansweredFor):
// /readyz and the nats dependency gauge use it.
func (q *Queue) Storing() error {
	st := q.StoringStatus()
	if st.Storing {
		return nil
	}
	why := "the server does not store"
	if st.silent {
		why = "the server does not answer, a ping included"
	}
	return fmt.Errorf("nats: no acknowledgement on a live connection for %d order publish(es) since %s: %s",
		st.Unanswered, st.UnansweredSince.UTC().Format(time.RFC3339), why)
}

// StoringStatus is Storing's view in detail.
func (q *Queue) StoringStatus() StoringStatus {
	s := &q.storing
	if !s.marked.Load() {
		return StoringStatus{Storing: true}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count == 0 || time.Since(s.last) > unansweredFor {
		return StoringStatus{Storing: true}
	}
	since := s.first
	return StoringStatus{Unanswered: s.count, UnansweredSince: &since, silent: s.silent}
}

// ProbeStoring, while a publish is marked unanswered, sends the latest
// such order again (its Nats-Msg-Id, the order id, deduplicates it if it
// was stored after all, as the reconciler's republish is): answered, the
// mark clears at once. Without it a stall that passed (a nats-server
// busy for longer than publishAckWait, a cluster's stream leader elected
// anew) kept /readyz at 503 for up to unansweredFor after it, on a
// replica with nothing else to publish: every replica of a fleet that
// stalled together out of its load balancer for 30 s. An unanswered
// probe leaves the mark as it was: it neither counts nor extends it, so a
// server that stores nothing still lets an idle replica's mark lapse
// (unansweredFor). A lapsed mark is cleared and not probed: Storing
// already says the bus stores, and an order probed again past the
// stream's duplicate window (nats.dedup_window, 2 minutes at least)
// would be stored a second time if the first one was stored after all
// (a PubAck that came late, or never came back). Probes of an order are
// thus within unansweredFor of its own unanswered publish. It costs an
// atomic load while nothing is marked.
func (q *Queue) ProbeStoring(ctx context.Context) (int, error) {
	s := &q.storing
	if !s.marked.Load() || !q.nc.IsConnected() {
		return 0, nil
	}
	s.mu.Lock()
	host, id := s.host, s.id
	if time.Since(s.last) > unansweredFor {
		s.count, s.first, s.last, s.host = 0, time.Time{}, time.Time{}, ""
		s.marked.Store(false)
		host = ""
	}
	s.mu.Unlock()
	if host == "" {
		return 0, nil
	}
	pctx, cancel := context.WithTimeout(ctx, publishAckWait)
	defer cancel()
	if _, err := q.publish(pctx, host, id); err != nil {
		return 0, nil // the mark stays as it was; the ERROR line said why
	}
	q.published(ctx, nil, 0, host, id)
	return 0, nil
}
