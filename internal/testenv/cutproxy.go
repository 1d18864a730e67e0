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
	ln       net.Listener
	mu       sync.Mutex
	conns    []net.Conn
	toServer *bool  // nil: carry both ways; else which way is dropped
	lost     []byte // what was dropped
	// when, set, starts the drop of the way whenWay once the client
	// writes a chunk holding it (DropWhen).
	when    []byte
	whenWay bool
}

// NewCutProxy starts a CutProxy to target (host:port), closed when the
// test ends.
func NewCutProxy(t testing.TB, target string) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); p.Cut(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.carry(s, c, true) }()
			go func() { defer wg.Done(); p.carry(c, s, false) }()
		}
	}()
	return p
}

// Addr is the proxy's address (host:port).
func (p *CutProxy) Addr() string { return p.ln.Addr().String() }

// carry copies from src to dst, the client's bytes to the server when
// toServer, dropping them while that way is dropped.
func (p *CutProxy) carry(dst, src net.Conn, toServer bool) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if toServer && p.when != nil && bytes.Contains(buf[:n], p.when) {
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
func (p *CutProxy) DropWhen(toServer bool, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.toServer, p.lost, p.when, p.whenWay = nil, nil, bytes.Clone(b), toServer
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
	conns := p.conns
	p.conns, p.toServer, p.when = nil, nil, nil
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}
