package testenv

import (
	"errors"
	"io"
	"net"
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
