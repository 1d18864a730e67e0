package worker_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// unansweredTouch is a Store whose TouchHost is never answered: the
// statement waits until its context ends, as one sent over a link to
// PostgreSQL that was cut without a word does.
type unansweredTouch struct {
	*postgres.Store
	once    sync.Once
	entered chan struct{}
}

func (s *unansweredTouch) TouchHost(ctx context.Context, host, version, instance string) error {
	s.once.Do(func() { close(s.entered) })
	<-ctx.Done()
	return ctx.Err()
}

// TestLeaseOutlivesAnUnansweredTouch: the holder of the lease records
// every minute in PostgreSQL that its host is alive, and did so between
// two renewals of the lease with no bound. A worker cut off from
// PostgreSQL alone (NATS reachable) stopped renewing a minute into the
// cut, and a standby took the host and interrupted the order it ran, for
// an outage the standby, on the same machine, shares. The renewals go on
// while the touch waits, and the host goes on running orders.
func TestLeaseOutlivesAnUnansweredTouch(t *testing.T) {
	e := newEnv(t)
	ctx := testenv.Context(t)
	store := &unansweredTouch{Store: e.store, entered: make(chan struct{})}
	opts := worker.Options{Host: "pgcut", Instance: "pgcut/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second, TouchEvery: 100 * time.Millisecond}
	runWorker(t, opts, store, e.q, testenv.Logger(t))
	select {
	case <-store.entered:
	case <-ctx.Done():
		t.Fatal("the worker never recorded that its host is alive")
	}
	first := e.submit("pgcut", "true")
	if o := e.waitStatus(first, order.StatusSucceeded); o.Worker != "pgcut/a" {
		t.Fatalf("the order ran on %s, want pgcut/a", o.Worker)
	}
	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	lw, err := kv.Watch(ctx, "lease.pgcut", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Stop()
	// A standby waits; the lease must be renewed by the holder for well
	// past its TTL (2 s) while every touch goes unanswered.
	b := opts
	b.Instance = "pgcut/b"
	runWorker(t, b, e.store, e.q, testenv.Logger(t))
	for renewals := 0; renewals < 15; {
		select {
		case u := <-lw.Updates():
			if u == nil {
				continue
			}
			if string(u.Value()) != "pgcut/a" || u.Operation() != jetstream.KeyValuePut {
				t.Fatalf("the lease went to %q (%v) while the touch waited, after %d renewals", u.Value(), u.Operation(), renewals)
			}
			renewals++
		case <-ctx.Done():
			t.Fatal("the lease was not renewed while the touch waited")
		}
	}
	next := e.submit("pgcut", "true")
	if o := e.waitStatus(next, order.StatusSucceeded); o.Worker != "pgcut/a" {
		t.Fatalf("the next order ran on %s, want pgcut/a", o.Worker)
	}
}

// pgLink forwards a unix socket of its own to PostgreSQL: the link of one
// worker, which the test cuts and restores while NATS stays reachable.
// hold stops forwarding with every connection left open (a partition
// shorter than the TCP user timeout: nothing refused, nothing answered);
// drop closes every connection and refuses new ones (the timeout spent,
// or a link whose far end says so); restore forwards again.
type pgLink struct {
	t      testing.TB
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	held   bool
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newPGLink(t testing.TB, dsn string) (*pgLink, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL."+q.Get("port")))
	if err != nil {
		t.Fatal(err)
	}
	l := &pgLink{t: t, ln: ln, target: filepath.Join(q.Get("host"), ".s.PGSQL."+q.Get("port")), conns: map[net.Conn]struct{}{}}
	l.cond = sync.NewCond(&l.mu)
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(func() {
		ln.Close()
		l.restore()
		l.mu.Lock()
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	u.RawQuery = "host=" + url.QueryEscape(dir) + "&port=" + q.Get("port") + "&sslmode=disable"
	return l, u.String()
}

func (l *pgLink) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		down := l.down
		l.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("unix", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		l.conns[c], l.conns[up] = struct{}{}, struct{}{}
		l.mu.Unlock()
		for _, p := range [][2]net.Conn{{up, c}, {c, up}} {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				l.pipe(p[0], p[1])
				p[0].Close()
				p[1].Close()
			}()
		}
	}
}

// pipe copies src to dst, holding what it read while the link is held.
func (l *pgLink) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			for l.held {
				l.cond.Wait()
			}
			l.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *pgLink) hold() {
	l.mu.Lock()
	l.held = true
	l.mu.Unlock()
}

func (l *pgLink) drop() {
	l.mu.Lock()
	l.down = true
	for c := range l.conns {
		c.Close()
	}
	clear(l.conns)
	l.mu.Unlock()
}

func (l *pgLink) restore() {
	l.mu.Lock()
	l.held, l.down = false, false
	l.cond.Broadcast()
	l.mu.Unlock()
}

// renewedBy waits for n renewals of the host's lease (lw watches it)
// and fails the test when anyone but instance holds it meanwhile.
func renewedBy(t *testing.T, lw jetstream.KeyWatcher, instance string, n int) {
	t.Helper()
	for renewals := 0; renewals < n; {
		select {
		case u := <-lw.Updates():
			if u == nil {
				continue
			}
			if string(u.Value()) != instance || u.Operation() != jetstream.KeyValuePut {
				t.Fatalf("the lease went to %q (%v) during the cut, after %d renewals", u.Value(), u.Operation(), renewals)
			}
			renewals++
		case <-t.Context().Done():
			t.Fatal("the lease was not renewed")
		}
	}
}

// TestWorkerCutOffFromPostgresKeepsItsHost: a worker whose link to
// PostgreSQL alone is cut (NATS reachable) keeps its lease, since a
// standby of the host (on the same machine) would be cut off as well and
// would interrupt the running order once it could; its order runs on
// across the cut (which outlasts the lease's TTL and the ack wait), its
// result is written once the link is back, and the orders submitted
// meanwhile run after it, on the same worker, in order. Both ways a link
// fails: held (nothing answered, nothing refused) from the order's
// process record to its end, and dropped (connections closed, new ones
// refused) between orders, with an order waiting to be claimed.
func TestWorkerCutOffFromPostgresKeepsItsHost(t *testing.T) {
	ctx := testenv.Context(t)
	direct := testenv.Postgres(t)
	store, _ := testenv.Store(t, direct)
	e := &env{t: t, store: store, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	link, dsn := newPGLink(t, direct)
	cut, _ := testenv.Store(t, dsn)
	opts := worker.Options{Host: "pgcut2", Instance: "pgcut2/a", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}
	runWorker(t, opts, cut, e.q, testenv.Logger(t))
	warm := e.submit("pgcut2", "true")
	e.waitStatus(warm, order.StatusSucceeded)

	kv, err := e.q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	lw, err := kv.Watch(ctx, "lease.pgcut2", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer lw.Stop()
	b := opts
	b.Instance = "pgcut2/b"
	runWorker(t, b, e.store, e.q, testenv.Logger(t))

	// Held from the process record to the order's end, and on for well
	// past the lease's TTL (2 s) and the ack wait (1 s).
	done := filepath.Join(t.TempDir(), "done")
	gate := filepath.Join(t.TempDir(), "gate")
	first := e.submit("pgcut2", "sh", "-c", `while [ ! -e "$1" ]; do sleep 0.05; done; echo ran >> "$2"`, "_", gate, done)
	testenv.WaitUntil(t, 30*time.Second, "the order's process on record", func() bool {
		p, err := e.store.ProcessOf(ctx, first, 1)
		return err == nil && p != nil
	})
	link.hold()
	second := e.submit("pgcut2", "true")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 30*time.Second, "the order to end", func() bool {
		_, err := os.Stat(done)
		return err == nil
	})
	renewedBy(t, lw, "pgcut2/a", 15)
	if o, err := e.store.GetOrder(ctx, first); err != nil || o.Status != order.StatusRunning {
		t.Fatalf("during the cut the order is %v (%v), want running", o.Status, err)
	}
	link.restore()
	for _, id := range []uuid.UUID{first, second} {
		if o := e.waitStatus(id, order.StatusSucceeded); o.Worker != "pgcut2/a" || o.Attempt != 1 {
			t.Fatalf("order %s ran on %s, attempt %d; want pgcut2/a, 1", id, o.Worker, o.Attempt)
		}
	}
	if data, _ := os.ReadFile(done); string(data) != "ran\n" {
		t.Fatalf("the order ran %q, want once", data)
	}

	// Dropped between orders, with an order waiting to be claimed.
	link.drop()
	third := e.submit("pgcut2", "true")
	renewedBy(t, lw, "pgcut2/a", 15)
	if o, err := e.store.GetOrder(ctx, third); err != nil || o.Status != order.StatusQueued {
		t.Fatalf("during the cut the next order is %v (%v), want queued", o.Status, err)
	}
	link.restore()
	if o := e.waitStatus(third, order.StatusSucceeded); o.Worker != "pgcut2/a" {
		t.Fatalf("the order after the cut ran on %s, want pgcut2/a", o.Worker)
	}
}
