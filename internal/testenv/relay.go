package testenv

import (
	"net"
	"sync"
	"testing"
)

// Relay accepts TCP connections on a loopback port and dials target for
// each, copying both ways with pipe (toServer set for the client's
// bytes): the frame of the tests' proxies (CutProxy, SlowPath, and
// internal/queue's silent path), which differ only in what they do with
// a chunk. Its connections are closed, and its goroutines waited for,
// when the test ends, after the test's own cleanups registered later.
type Relay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// StartRelay starts a Relay to target (host:port).
func StartRelay(t testing.TB, target string, pipe func(dst, src net.Conn, toServer bool)) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); r.CloseConns(); wg.Wait() })
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
			r.mu.Lock()
			r.conns = append(r.conns, c, s)
			r.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); pipe(s, c, true) }()
			go func() { defer wg.Done(); pipe(c, s, false) }()
		}
	}()
	return r
}

// Addr is the relay's address (host:port).
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// CloseConns closes every connection made through the relay so far.
func (r *Relay) CloseConns() {
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}
