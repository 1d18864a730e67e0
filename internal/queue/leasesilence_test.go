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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentPath{addr: ln.Addr().String()}
	open := make(chan struct{})
	close(open)
	p.gate.Store(&open)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		p.carry()
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(up, c) }()
			go func() { defer wg.Done(); p.pipe(c, up) }()
		}
	}()
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
