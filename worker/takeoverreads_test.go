package worker_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestTakeoverReadsNATSBesideItsStatements: a worker taking a host over
// from another instance read the host's claim mark and looked its
// consumer up only once PostgreSQL had settled what the previous owner
// left, and looked the consumer up twice (whether the server lost it,
// then its ack floor before replacing it): four round trips of NATS in a
// row after the statements, up to a second each when a whole fleet's
// workers took their hosts at once (TestFaultsFleet, docs/decisions.md,
// hE29). The reads are sent now before the takeover's read of the orders
// left running returns, and the consumer is looked up once before it is
// replaced. Counted on the bus: the JetStream API requests the successor
// sends, seen by a subscriber of their subjects.
func TestTakeoverReadsNATSBesideItsStatements(t *testing.T) {
	e := newEnv(t)
	const host = "readahead"
	stopA, _ := e.start(host, nil)
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	stopA() // released: the successor takes the lease at once

	nc, err := nats.Connect(e.q.Conn().ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var (
		mu       sync.Mutex
		requests []string // the successor's requests on the host's consumer and claim mark, in order
		info     int      // consumer look-ups before it was replaced
		replaced bool
		both     = make(chan struct{}) // closed once a look-up and a mark read were seen
		marked   bool
		told     bool
	)
	consumer := "ORDERLY_ORDERS." + queue.ConsumerName(host)
	sub, err := nc.Subscribe("$JS.API.>", func(m *nats.Msg) {
		s := m.Subject
		if !strings.Contains(s, consumer) && !strings.Contains(s, queue.MarksBucket) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if replaced {
			return
		}
		switch {
		case strings.HasPrefix(s, "$JS.API.CONSUMER.DELETE."), strings.Contains(s, "CREATE."):
			replaced = true
			return
		case strings.HasPrefix(s, "$JS.API.CONSUMER.INFO."):
			info++
		default:
			marked = true
		}
		requests = append(requests, s)
		if info > 0 && marked && !told {
			told = true
			close(both)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	store := &readsAtSettle{Store: e.store, seen: both}
	runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second, ShutdownGrace: 5 * time.Second},
		store, e.q, testenv.Logger(t))
	e.waitStatus(e.submit(host, "true"), order.StatusSucceeded)
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !store.sent.Load() {
		t.Errorf("the takeover's read of the orders left running returned before its claim mark read and consumer look-up were sent: the reads waited for PostgreSQL (requests before the consumer was replaced: %q)", requests)
	}
	if info != 1 {
		t.Errorf("the takeover looked the host's consumer up %d times before replacing it, want once: %q", info, requests)
	}
}

// readsAtSettle is a Store whose first read of a host's orders left
// running (the takeover's) answers once seen is closed (the takeover's
// NATS reads were seen on the bus), or after 5 s, and records which.
type readsAtSettle struct {
	worker.Store
	seen <-chan struct{}

	once sync.Once
	sent atomic.Bool
}

func (s *readsAtSettle) RunningOrders(ctx context.Context, host string) ([]*order.Order, error) {
	s.once.Do(func() {
		select {
		case <-s.seen:
			s.sent.Store(true)
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
	})
	return s.Store.RunningOrders(ctx, host)
}
