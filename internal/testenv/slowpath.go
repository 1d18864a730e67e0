package testenv

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// SlowPath forwards TCP connections to a server, delivering each chunk
// either way a fixed delay after it was read, in order: a client whose
// round trip to the server is 2*delay, as one on a loaded machine or a
// distant network is. Closed when the test ends.
func SlowPath(t testing.TB, target string, delay time.Duration) (addr string) {
	t.Helper()
	return StartRelay(t, target, func(dst, src net.Conn, _ bool) { delayLine(dst, src, delay) }).Addr()
}

// delayLine copies src to dst, each chunk delay after it was read.
func delayLine(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	line := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer dst.Close()
		for c := range line {
			time.Sleep(time.Until(c.at))
			if _, err := dst.Write(c.b); err != nil {
				for range line {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			line <- chunk{time.Now().Add(delay), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			close(line)
			<-done
			return
		}
	}
}

// HeldSlowPath is SlowPath whose client bytes stop at the first chunk
// that held reports true for, until the test calls release: held is
// closed once they stop. A test forces an interleaving with it, letting
// a client's request reach the server only when it chooses.
func HeldSlowPath(t testing.TB, target string, delay time.Duration, held func(chunk []byte) bool) (addr string, holding <-chan struct{}, release func()) {
	t.Helper()
	h := &holdGate{held: held, holding: make(chan struct{}), released: make(chan struct{})}
	addr = StartRelay(t, target, func(dst, src net.Conn, toServer bool) {
		if toServer {
			src = &heldConn{Conn: src, g: h}
		}
		delayLine(dst, src, delay)
	}).Addr()
	var once sync.Once
	release = func() { once.Do(func() { close(h.released) }) }
	t.Cleanup(release)
	return addr, h.holding, release
}

// holdGate is HeldSlowPath's: stopped once, released once.
type holdGate struct {
	held     func([]byte) bool
	stopped  sync.Once
	holding  chan struct{}
	released chan struct{}
}

// heldConn is a client's connection whose reads wait at its gate.
type heldConn struct {
	net.Conn
	g *holdGate
}

func (c *heldConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.g.held(b[:n]) {
		select {
		case <-c.g.released:
		default:
			c.g.stopped.Do(func() { close(c.g.holding) })
			<-c.g.released
		}
	}
	return n, err
}
