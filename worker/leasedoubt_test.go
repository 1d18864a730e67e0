package worker_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
)

// TestHeartbeatDoubtHoldsClaimsUntilTheRenewal: a running worker's
// heartbeat finds its host lease in doubt (queue.ErrNotHolder: another
// worker's heartbeat written since its last renewal, the lease key
// revised under it). The order it is about to claim waits for the
// renewal that the doubt asks for at once, held on its way to NATS,
// and is claimed only after its verdict: the lease is still the
// worker's (the key names it), and the order runs in the same tenure;
// or another worker holds it, and the order is left queued, unclaimed,
// as the tenure ends.
//
// Provoked, not hoped for: a proxy between the worker and NATS holds
// the worker's next heartbeat while the test writes the rival's entries,
// then holds the renewal; the claim is held before its statement until
// the doubt stands, and then fails as a lost connection would, so that
// its next try comes while the renewal is held.
func TestHeartbeatDoubtHoldsClaimsUntilTheRenewal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rival bool // the lease key names another worker, not this one
	}{
		{"still_held", false},
		{"taken", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			store, _ := testenv.Store(t, testenv.Postgres(t))
			// A minute's lease: the rival's key outlives the test, so the
			// worker cannot take the host again in a new tenure.
			q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: slowAckWait, LeaseTTL: time.Minute})
			e := &env{t: t, store: store, q: q}
			host := "doubt-" + strings.ReplaceAll(tc.name, "_", "-")
			instance := host + "/worker"

			proxy := newPubHoldProxy(t, q.Conn().ConnectedUrl())
			nc, err := queue.Connect("nats://"+proxy.addr(), "worker")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			wq, err := queue.New(ctx, nc, queue.Options{AckWait: slowAckWait, LeaseTTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			id := e.submit(host, "true")
			hook := &claimHook{Store: store, id: id, before: true, held: make(chan struct{}), release: make(chan struct{})}
			log := &testenv.LogBuffer{}
			runWorker(t, worker.Options{Host: host, Instance: instance, Heartbeat: 200 * time.Millisecond, AckWait: slowAckWait,
				ShutdownGrace: 5 * time.Second}, hook, wq, testenv.LoggerTo(io.MultiWriter(t.Output(), log)))
			select {
			case <-hook.held:
			case <-ctx.Done():
				t.Fatal("the worker never claimed the order")
			}

			kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
			if err != nil {
				t.Fatal(err)
			}
			// The worker's heartbeats are written: the next one updates
			// its own entry's revision.
			testenv.WaitUntil(t, 30*time.Second, "the worker's heartbeat", func() bool {
				en, err := kv.Get(ctx, "info."+host)
				var h queue.HostInfo
				return err == nil && json.Unmarshal(en.Value(), &h) == nil && h.Instance == instance
			})
			infoSubject := "$KV." + queue.HostsBucket + ".info." + host
			leaseSubject := "$KV." + queue.HostsBucket + ".lease." + host
			proxy.hold(infoSubject)
			testenv.WaitUntil(t, 30*time.Second, "the next heartbeat is held", func() bool { return proxy.holding(infoSubject) })
			rival, err := json.Marshal(queue.HostInfo{Host: host, Instance: "rival", StartedAt: time.Now(), LastSeen: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, "info."+host, rival); err != nil {
				t.Fatal(err)
			}
			holder := instance // a revision of its own key it did not write
			if tc.rival {
				holder = "rival"
			}
			if _, err := kv.Put(ctx, "lease."+host, []byte(holder)); err != nil {
				t.Fatal(err)
			}
			// The heartbeat goes on and finds the rival's; the renewal it
			// asks for at once is held.
			proxy.hold(leaseSubject)
			proxy.release(infoSubject)
			testenv.WaitUntil(t, 30*time.Second, "the renewal after the doubt is held", func() bool { return proxy.holding(leaseSubject) })
			// The heartbeat logs its finding after it asks for the
			// renewal, which may be held first (or a tick's renewal may
			// be: sent before the doubt, its verdict does not clear it).
			testenv.WaitUntil(t, 30*time.Second, "the heartbeat finds the lease in doubt", func() bool {
				return strings.Contains(log.String(), "may not be this worker's")
			})

			close(hook.release)
			testenv.WaitUntil(t, 30*time.Second, "the claim's next try waits for the renewal", func() bool {
				return strings.Contains(log.String(), "the order's claim waits for its renewal's verdict")
			})
			if n := hook.later.Load(); n > 0 {
				t.Fatalf("the order claimed %d times while its host lease was in doubt", n)
			}
			proxy.release(leaseSubject)

			if o := wantLeaseOutcome(t, e, log, hook, id, tc.rival, "after another worker took the host"); o != nil && o.Attempt != 0 {
				t.Errorf("the order after another worker took the host: attempt %d, want never claimed", o.Attempt)
			}
		})
	}
}

// pubHoldProxy forwards a NATS client's connections to a server, reading
// what the client sends message by message: it can hold the next publish
// to a subject while the client's other messages pass, and send it on
// later. The server's side passes as it is.
type pubHoldProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	armed  map[string]bool        // subjects whose next publish is held
	held   map[string]heldPublish // by subject
	conns  []net.Conn
	// dropping: subjects whose publishes that contain the string are
	// never sent on, for as long as it is set (a request NATS never
	// answers); dropped counts them.
	dropping map[string]string
	dropped  map[string]int
	// keeping: subjects whose publishes are all kept, in order, in kept,
	// until sendKept.
	keeping map[string]bool
	kept    map[string][]heldPublish
}

// heldPublish is a publish held on its way to the server.
type heldPublish struct {
	to  *serverSide
	msg []byte
}

// serverSide is a connection to the server, written by its client's
// reader and by a release.
type serverSide struct {
	mu   sync.Mutex
	conn net.Conn
}

func (s *serverSide) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.conn.Write(b)
	return err
}

func newPubHoldProxy(t testing.TB, target string) *pubHoldProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &pubHoldProxy{ln: ln, target: u.Host, armed: map[string]bool{}, held: map[string]heldPublish{},
		dropping: map[string]string{}, dropped: map[string]int{}, keeping: map[string]bool{}, kept: map[string][]heldPublish{}}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	go p.serve()
	return p
}

func (p *pubHoldProxy) addr() string { return p.ln.Addr().String() }

// queue is a Queue on a connection of its own through p, a worker
// process's, with a lease of lease.
func (p *pubHoldProxy) queue(t testing.TB, lease time.Duration) *queue.Queue {
	t.Helper()
	nc, err := queue.Connect("nats://"+p.addr(), "worker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.New(testenv.Context(t), nc, queue.Options{AckWait: time.Second, LeaseTTL: lease})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (p *pubHoldProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go func() {
			_, _ = io.Copy(client, server)
			client.Close()
		}()
		go func() {
			p.up(client, &serverSide{conn: server})
			server.Close()
		}()
	}
}

// up passes the client's protocol messages on to the server, but for a
// publish to an armed subject, which it keeps.
func (p *pubHoldProxy) up(client net.Conn, server *serverSide) {
	r := bufio.NewReader(client)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		msg := line
		// PUB <subject> [reply] <size>, HPUB <subject> [reply] <header size> <total size>
		if f := strings.Fields(string(line)); len(f) >= 3 && (strings.EqualFold(f[0], "PUB") || strings.EqualFold(f[0], "HPUB")) {
			size, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			body := make([]byte, size+2) // and its CRLF
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			msg = append(msg, body...)
			p.mu.Lock()
			if needle, ok := p.dropping[f[1]]; ok && strings.Contains(string(msg), needle) {
				p.dropped[f[1]]++
				p.mu.Unlock()
				continue
			}
			if p.keeping[f[1]] {
				p.kept[f[1]] = append(p.kept[f[1]], heldPublish{to: server, msg: msg})
				p.mu.Unlock()
				continue
			}
			keep := p.armed[f[1]]
			if keep {
				delete(p.armed, f[1])
				p.held[f[1]] = heldPublish{to: server, msg: msg}
			}
			p.mu.Unlock()
			if keep {
				continue
			}
		}
		if server.write(msg) != nil {
			return
		}
	}
}

// hold keeps the next publish to subject.
func (p *pubHoldProxy) hold(subject string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed[subject] = true
}

// holding reports whether a publish to subject is kept.
func (p *pubHoldProxy) holding(subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.held[subject]
	return ok
}

// release sends the publish kept for subject on to the server.
func (p *pubHoldProxy) release(subject string) {
	p.mu.Lock()
	h, ok := p.held[subject]
	delete(p.held, subject)
	delete(p.armed, subject)
	p.mu.Unlock()
	if ok {
		_ = h.to.write(h.msg)
	}
}

// drop has the publishes to subject that contain needle never sent on,
// until stopDropping.
func (p *pubHoldProxy) drop(subject, needle string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropping[subject] = needle
}

// stopDropping sends the publishes to subject on again.
func (p *pubHoldProxy) stopDropping(subject string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.dropping, subject)
}

// droppedTo counts the publishes to subject dropped so far.
func (p *pubHoldProxy) droppedTo(subject string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped[subject]
}

// keepAll keeps every publish to subject, until sendKept.
func (p *pubHoldProxy) keepAll(subject string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keeping[subject] = true
}

// keptFor counts the publishes to subject kept so far.
func (p *pubHoldProxy) keptFor(subject string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.kept[subject])
}

// sendKept sends the publishes kept for subject on to the server, in
// order, and lets the next ones pass.
func (p *pubHoldProxy) sendKept(subject string) {
	p.mu.Lock()
	kept := p.kept[subject]
	delete(p.kept, subject)
	delete(p.keeping, subject)
	p.mu.Unlock()
	for _, h := range kept {
		_ = h.to.write(h.msg)
	}
}
