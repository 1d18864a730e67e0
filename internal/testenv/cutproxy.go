package testenv

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// CutProxy is a TCP proxy to a nats-server that can drop what one side
// writes, leaving the connection open (a socket whose peer is gone, as
// the writer cannot yet tell), then cut every connection; the client
// dials again through it, to a proxy that carries everything again. It
// loses a request, or its answer, the way a nats-server restart can:
// on demand, where a restart does it a few times in ten thousand.
type CutProxy struct {
	relay    *Relay
	mu       sync.Mutex
	toServer *bool  // nil: carry both ways; else which way is dropped
	lost     []byte // what was dropped
	// when, set, starts the drop of the way whenWay once the client
	// writes a chunk holding it (DropWhen).
	when    []byte
	whenWay bool
	// whenSkip is how many chunks holding when pass before the drop
	// starts (DropWhenNth).
	whenSkip int
}

// NewCutProxy starts a CutProxy to target (host:port), closed when the
// test ends.
func NewCutProxy(t testing.TB, target string) *CutProxy {
	t.Helper()
	p := &CutProxy{}
	p.relay = StartRelay(t, target, p.carry)
	return p
}

// Addr is the proxy's address (host:port).
func (p *CutProxy) Addr() string { return p.relay.Addr() }

// carry copies from src to dst, the client's bytes to the server when
// toServer, dropping them while that way is dropped.
func (p *CutProxy) carry(dst, src net.Conn, toServer bool) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if toServer && p.when != nil && bytes.Contains(buf[:n], p.when) && p.skipped() {
				way := p.whenWay
				p.toServer, p.lost, p.when = &way, nil, nil
			}
			drop := p.toServer != nil && *p.toServer == toServer
			if drop {
				p.lost = append(p.lost, buf[:n]...)
			}
			p.mu.Unlock()
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Drop starts dropping what the client writes (toServer) or what the
// server does.
func (p *CutProxy) Drop(toServer bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.toServer, p.lost = &toServer, nil
}

// DropWhen is Drop once the client writes b: the request holding b is
// lost (toServer), or what the server writes from then on, its answer
// among it, and not the requests before it (a read before the write it
// leads to).
func (p *CutProxy) DropWhen(toServer bool, b []byte) { p.DropWhenNth(toServer, b, 1) }

// DropWhenNth is DropWhen at the nth chunk the client writes holding b:
// a request sent as the same bytes as others before it (a key's read)
// is lost there, not the first of them.
func (p *CutProxy) DropWhenNth(toServer bool, b []byte, nth int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.toServer, p.lost, p.when, p.whenWay, p.whenSkip = nil, nil, bytes.Clone(b), toServer, nth-1
}

// skipped counts a chunk holding when, and reports whether the drop
// starts at it. Called with mu held.
func (p *CutProxy) skipped() bool {
	if p.whenSkip > 0 {
		p.whenSkip--
		return false
	}
	return true
}

// Dropped reports whether what was dropped holds b.
func (p *CutProxy) Dropped(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Contains(p.lost, b)
}

// Cut closes every connection through the proxy and carries everything
// on the next ones.
func (p *CutProxy) Cut() {
	p.mu.Lock()
	p.toServer, p.when = nil, nil
	p.mu.Unlock()
	p.relay.CloseConns()
}
