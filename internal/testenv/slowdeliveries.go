package testenv

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// SlowDeliveries forwards TCP connections to a NATS server. While the
// test has it slow (set(true)), the server's deliveries of a consumer's
// messages, the MSG and HMSG frames whose reply subject starts with
// replyPrefix ("$JS.ACK.<stream>." for a stream's consumers), reach the
// client delay after the server sent them; every other frame (the API's
// answers, the server's PINGs, other subscriptions' messages) passes at
// once, and so does every byte the client sends. It is a server slow to
// deliver one stream's messages and quick at everything else, made on
// purpose: a pull whose messages come after the client stopped waiting
// for them, while the consumer's info answers.
func SlowDeliveries(t testing.TB, target, replyPrefix string, delay time.Duration) (addr string, set func(slow bool)) {
	t.Helper()
	var slow atomic.Bool
	addr = StartRelay(t, target, func(dst, src net.Conn, toServer bool) {
		defer func() { _ = dst.Close(); _ = src.Close() }()
		if toServer {
			_, _ = io.Copy(dst, src)
			return
		}
		delayFrames(dst, src, func(reply []byte) bool {
			return slow.Load() && bytes.HasPrefix(reply, []byte(replyPrefix))
		}, delay)
	}).Addr()
	return addr, slow.Store
}

// delayFrames copies the NATS server's frames from src to dst, those
// whose reply subject late says so delay after they were read, in order
// among themselves, the others at once.
func delayFrames(dst, src net.Conn, late func(reply []byte) bool, delay time.Duration) {
	var mu sync.Mutex // one frame written at a time
	write := func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := dst.Write(b)
		return err
	}
	type frame struct {
		at time.Time
		b  []byte
	}
	line := make(chan frame, 1<<16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range line {
			time.Sleep(time.Until(f.at))
			if write(f.b) != nil {
				for range line {
				}
				return
			}
		}
	}()
	defer func() { close(line); <-done }()
	r := bufio.NewReaderSize(src, 64<<10)
	for {
		head, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		b := head
		var reply []byte
		if f := bytes.Fields(head); len(f) > 0 && (string(f[0]) == "MSG" || string(f[0]) == "HMSG") {
			// MSG <subject> <sid> [reply] <size>, HMSG <subject> <sid>
			// [reply] <header size> <size>: the reply is there when
			// the frame has its most fields.
			most := 5
			if string(f[0]) == "HMSG" {
				most = 6
			}
			if len(f) == most {
				reply = f[3]
			}
			size, err := strconv.Atoi(string(f[len(f)-1]))
			if err != nil {
				return
			}
			payload := make([]byte, size+2) // and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			b = append(append([]byte(nil), head...), payload...)
		}
		if reply != nil && late(reply) {
			line <- frame{time.Now().Add(delay), b}
			continue
		}
		if write(b) != nil {
			return
		}
	}
}
