package queue_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStandbyLeavesALeaseThatLapsedInASilenceToItsHolder: the holder
// of a lease and its standby reach the NATS server through one path
// that goes silent for three leases (nothing closed, nothing through:
// what a frozen nats-server is to its clients), then carries again what
// waited. The server expired the key meanwhile, since no renewal reached
// it; the standby saw no renewal either, but it heard nothing at all.
// The holder renews on, as a worker does; when the path carries again,
// its renewal (an update refused, a read, a take: three requests) must
// keep the host, not lose it to the standby's take, which was one
// request waiting with it (TestFaultsNATSFrozen: the standby took the
// host after every freeze longer than the lease, and the order its live
// holder ran was interrupted). The standby goes on waiting while the
// holder renews.
func TestStandbyLeavesALeaseThatLapsedInASilenceToItsHolder(t *testing.T) {
	const ttl = time.Second
	ctx := testenv.Context(t)
	p := startSilentPath(t, strings.TrimPrefix(testenv.NATS(t), "nats://"))
	url := "nats://" + p.addr
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	a, err := holder.AcquireLease(ctx, "s1", "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The holder renews every third of the lease, as a worker does.
	var lost atomic.Pointer[error]
	rctx, stopRenewing := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rctx.Err() == nil {
			if _, err := a.Renew(rctx); errors.Is(err, queue.ErrLeaseLost) {
				lost.Store(&err)
				return
			}
			select {
			case <-rctx.Done():
			case <-time.After(ttl / 3):
			}
		}
	}()
	var stopStandby context.CancelFunc = func() {}
	defer func() {
		stopRenewing()
		stopStandby()
		wg.Wait()
	}()
	// The standby tries again after an error, as a worker does.
	waiting, took := make(chan struct{}), make(chan *queue.Lease, 1)
	var once sync.Once
	sctx, stop := context.WithCancel(ctx)
	stopStandby = stop
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sctx.Err() == nil {
			l, err := standby.AcquireLease(sctx, "s1", "B", func(string) { once.Do(func() { close(waiting) }) })
			if err == nil {
				took <- l
				return
			}
			t.Logf("standby: %v", err)
			select {
			case <-sctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	<-waiting
	// Renewals seen by the standby's watch first.
	time.Sleep(ttl)

	p.silence()
	time.Sleep(3 * ttl)
	p.carry()
	// Long enough for the standby to take the key after the silence
	// had its silence counted, and for the holder to lose it then.
	select {
	case <-took:
		t.Fatal("the standby took the lease after the silence: its holder renewed throughout")
	case <-time.After(4 * ttl):
	}
	if err := lost.Load(); err != nil {
		t.Fatalf("the holder lost its lease after the silence: %v", *err)
	}
	// A holder that stops renewing still hands the host over.
	stopRenewing()
	select {
	case <-took:
	case <-time.After(10 * ttl):
		t.Fatal("the standby did not take the lease its holder stopped renewing")
	}
}

// silentPath forwards TCP connections to a NATS server and can hold
// everything sent either way, as a frozen server or a partition does to
// its clients: connections stay open and carry nothing, what is sent
// waits, and goes on, in order, once it carries again.
type silentPath struct {
	addr string
	gate atomic.Pointer[chan struct{}] // closed while traffic flows
}

func startSilentPath(t *testing.T, target string) *silentPath {
	t.Helper()
	p := &silentPath{}
	open := make(chan struct{})
	close(open)
	p.gate.Store(&open)
	p.addr = testenv.StartRelay(t, target, func(dst, src net.Conn, _ bool) { p.pipe(dst, src) }).Addr()
	t.Cleanup(p.carry) // before the relay's: a pipe held at the gate ends
	return p
}

// pipe copies src to dst, holding each chunk read while the path is
// silent.
func (p *silentPath) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-*p.gate.Load()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}

func (p *silentPath) silence() {
	held := make(chan struct{})
	p.gate.Store(&held)
}

func (p *silentPath) carry() {
	g := *p.gate.Load()
	select {
	case <-g:
	default:
		close(g)
	}
}

// TestSignedHolderKeepsItsLeaseFromAForgerAfterASilence: the silence of
// TestStandbyLeavesALeaseThatLapsedInASilenceToItsHolder, with the
// holder and its standby signing with their host's key and another
// credential writing unsigned values on the key every lease/40 (the
// reply-subject route, decisions.md hA18/hA19) from before the silence
// to the end. Where the path carries again, the holder finds a value
// its host's key did not sign, its last write more than a lease old:
// it lost the host to it (a value past the lease was honoured as an
// older worker's), and the standby, its contact counted, took the
// forged key over a lease after the last renewal it had read, though
// the holder renewed throughout (its renewals arrived in the watch
// while the standby waited on its contact, unread): a live holder's
// host taken, and its running order interrupted, by a forger and a
// frozen nats-server together.
func TestSignedHolderKeepsItsLeaseFromAForgerAfterASilence(t *testing.T) {
	for _, silence := range []time.Duration{3 * time.Second, 1050 * time.Millisecond} {
		t.Run(silence.String(), func(t *testing.T) { testForgerAfterASilence(t, silence) })
	}
}

func testForgerAfterASilence(t *testing.T, silence time.Duration) {
	const ttl = time.Second
	ctx := testenv.Context(t)
	direct := testenv.NATS(t)
	p := startSilentPath(t, strings.TrimPrefix(direct, "nats://"))
	url := "nats://" + p.addr
	holder := testenv.Queue(t, url, "holder", queue.Options{LeaseTTL: ttl})
	standby := testenv.Queue(t, url, "standby", queue.Options{LeaseTTL: ttl})
	forger := testenv.Queue(t, direct, "forger", queue.Options{LeaseTTL: ttl})
	kv, err := forger.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	k := queue.NewMarkKey([]byte("seed of s1"))
	a, err := holder.AcquireSignedLease(ctx, "s1", "A", k, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lost atomic.Pointer[error]
	rctx, stopRenewing := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rctx.Err() == nil {
			if _, err := a.Renew(rctx); errors.Is(err, queue.ErrLeaseLost) {
				lost.Store(&err)
				return
			}
			select {
			case <-rctx.Done():
			case <-time.After(ttl / 3):
			}
		}
	}()
	waiting, took := make(chan struct{}), make(chan *queue.Lease, 1)
	var once sync.Once
	sctx, stopStandby := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sctx.Err() == nil {
			l, err := standby.AcquireSignedLease(sctx, "s1", "B", k, func(string) { once.Do(func() { close(waiting) }) })
			if err == nil {
				took <- l
				return
			}
			t.Logf("standby: %v", err)
			select {
			case <-sctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	fctx, stopForging := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for fctx.Err() == nil {
			_, _ = kv.Put(fctx, "lease.s1", []byte("forger"))
			select {
			case <-fctx.Done():
			case <-time.After(ttl / 40):
			}
		}
	}()
	defer func() {
		stopForging()
		stopRenewing()
		stopStandby()
		wg.Wait()
	}()
	<-waiting
	time.Sleep(ttl)

	p.silence()
	time.Sleep(silence)
	p.carry()
	select {
	case l := <-took:
		t.Fatalf("the standby took the lease (freed %q) after the silence: its holder renewed throughout", l.Freed())
	case <-time.After(4 * ttl):
	}
	if err := lost.Load(); err != nil {
		t.Fatalf("the holder lost its lease to a forged value after the silence: %v", *err)
	}
	// A holder that stops renewing still hands the host over.
	stopRenewing()
	select {
	case <-took:
	case <-time.After(10 * ttl):
		t.Fatal("the standby did not take the lease its holder stopped renewing")
	}
}
