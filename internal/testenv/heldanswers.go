package testenv

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// HeldAnswersPath forwards TCP connections to a server. Once the test
// calls hold, the server's bytes wait in the relay, and the client's
// still reach the server: every request is taken and none is answered,
// as from a server that answers after the client's bound. They flow again
// from the first client chunk that holds until, after it was forwarded,
// so that the request it carries is answered with what waited before it.
func HeldAnswersPath(t testing.TB, target string, until []byte) (addr string, hold func()) {
	t.Helper()
	g := &answersGate{until: until}
	g.cond = sync.NewCond(&g.mu)
	addr = StartRelay(t, target, g.carry).Addr()
	t.Cleanup(g.release)
	return addr, func() {
		g.mu.Lock()
		g.held = true
		g.mu.Unlock()
	}
}

// answersGate is HeldAnswersPath's: held once, released once.
type answersGate struct {
	until []byte
	mu    sync.Mutex
	cond  *sync.Cond
	held  bool
	done  bool
}

func (g *answersGate) release() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *answersGate) carry(dst, src net.Conn, toServer bool) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !toServer {
				g.mu.Lock()
				for g.held && !g.done {
					g.cond.Wait()
				}
				g.mu.Unlock()
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if toServer && bytes.Contains(buf[:n], g.until) {
				g.mu.Lock()
				released := g.held
				g.mu.Unlock()
				if released {
					g.release()
				}
			}
		}
		if err != nil {
			return
		}
	}
}
