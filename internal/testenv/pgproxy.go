package testenv

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// PGProxy forwards connections to PostgreSQL's unix socket and knows each
// by its backend's pid (from the BackendKeyData PostgreSQL sends at the
// start): it can hold the answers of one backend's connection, and cut
// that connection with its answers still held.
type PGProxy struct {
	mu    sync.Mutex
	byPID map[uint32]*proxiedConn
	hold  uint32 // the backend whose answers wait at the gate; 0: none
	all   []net.Conn
	wg    sync.WaitGroup
}

// proxiedConn is one client's connection and PostgreSQL's.
type proxiedConn struct {
	client, server net.Conn
	waiting        bool          // an answer waits at the gate (under PGProxy.mu)
	cut            chan struct{} // closed by PGProxy.Cut
}

// StartPGProxy runs a PGProxy in front of dsn's server and returns the
// DSN that goes through it.
func StartPGProxy(t *testing.T, dsn string) (string, *PGProxy) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	target := filepath.Join(q.Get("host"), ".s.PGSQL."+q.Get("port"))
	dir, err := os.MkdirTemp("", "pgproxy-")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL."+q.Get("port")))
	if err != nil {
		t.Fatal(err)
	}
	p := &PGProxy{byPID: map[uint32]*proxiedConn{}}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.all {
			closeConn(c)
		}
		for _, pc := range p.byPID {
			select {
			case <-pc.cut:
			default:
				close(pc.cut)
			}
		}
		p.mu.Unlock()
		p.wg.Wait()
		os.RemoveAll(dir)
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			pc := &proxiedConn{client: c, server: up, cut: make(chan struct{})}
			p.mu.Lock()
			p.all = append(p.all, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(up, c)
				closeConn(up)
				closeConn(c)
			}()
			go func() {
				defer p.wg.Done()
				p.answers(pc)
				closeConn(up)
				closeConn(c)
			}()
		}
	}()
	u.RawQuery = "host=" + url.QueryEscape(dir) + "&port=" + q.Get("port") + "&sslmode=disable"
	return u.String(), p
}

// closeConn shuts a socket down before closing it: a child forked
// meanwhile (between its fork and its exec) holds a copy, which Close
// alone would leave open.
func closeConn(c net.Conn) {
	if u, ok := c.(*net.UnixConn); ok {
		_ = u.CloseRead()
		_ = u.CloseWrite()
	}
	c.Close()
}

// answers forwards PostgreSQL's messages to the client: message by
// message until the BackendKeyData that names the backend, then as they
// come, unless they are the held backend's.
func (p *PGProxy) answers(pc *proxiedConn) {
	r := bufio.NewReader(pc.server)
	var pid uint32
	for pid == 0 {
		head := make([]byte, 5)
		if _, err := io.ReadFull(r, head); err != nil {
			return
		}
		msg := make([]byte, 5+int(binary.BigEndian.Uint32(head[1:]))-4)
		copy(msg, head)
		if _, err := io.ReadFull(r, msg[5:]); err != nil {
			return
		}
		if head[0] == 'K' {
			pid = binary.BigEndian.Uint32(msg[5:])
			p.mu.Lock()
			p.byPID[pid] = pc
			p.mu.Unlock()
		}
		if _, err := pc.client.Write(msg); err != nil {
			return
		}
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		held := p.hold == pid
		if held {
			pc.waiting = true
		}
		p.mu.Unlock()
		if held {
			<-pc.cut // the answer is never delivered
			return
		}
		if _, err := pc.client.Write(buf[:n]); err != nil {
			return
		}
	}
}

// HoldAnswers holds every answer of backend pid from now on.
func (p *PGProxy) HoldAnswers(pid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = pid
}

// AnswerWaiting reports whether an answer of backend pid waits at the
// gate.
func (p *PGProxy) AnswerWaiting(pid uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.byPID[pid]
	return pc != nil && pc.waiting
}

// Cut closes backend pid's connection, both sides, dropping what it held.
func (p *PGProxy) Cut(pid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.byPID[pid]
	close(pc.cut)
	closeConn(pc.client)
	closeConn(pc.server)
	p.hold = 0
}
