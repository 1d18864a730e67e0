package main

import (
	"io"
	"net"
	"sync"
	"testing"
)

// forward joins every connection accepted on ln to a new one to network
// target, copying each way with pipe (io.Copy when nil) until either side
// ends. It returns cut, which drops every joined connection at once (both
// sides, no goodbye) and says how many pairs it dropped. The test's
// cleanup closes ln and everything still open.
func forward(t *testing.T, ln net.Listener, network, target string, pipe func(dst, src net.Conn)) (cut func() int) {
	if pipe == nil {
		pipe = func(dst, src net.Conn) { _, _ = io.Copy(dst, src) }
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	cut = func() int {
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			// shutdown first: a child forked meanwhile (any test of the
			// package, between its fork and its exec) holds a copy of
			// this socket, and Close alone then leaves it open until
			// that exec; a client writing meanwhile had its statement
			// taken and its answer cut (unexpected EOF), not refused.
			if s, ok := c.(interface {
				CloseRead() error
				CloseWrite() error
			}); ok {
				_ = s.CloseRead()
				_ = s.CloseWrite()
			}
			c.Close()
		}
		n := len(conns)
		clear(conns)
		return n / 2
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial(network, target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns[c], conns[up] = struct{}{}, struct{}{}
			mu.Unlock()
			wg.Add(2)
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				go func() {
					defer wg.Done()
					pipe(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cut()
		wg.Wait()
	})
	return cut
}
