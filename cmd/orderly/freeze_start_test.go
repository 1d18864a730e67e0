package main

import (
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// holdProxy forwards a worker's NATS connections and, while held, keeps
// what the worker sends (its answers still come): a holder whose
// renewals are late by as long as the test likes.
type holdProxy struct {
	t      *testing.T
	target string
	ln     net.Listener
	mu     sync.Mutex
	gate   chan struct{} // closed: forwarding
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := make(chan struct{})
	close(open)
	p := &holdProxy{t: t, target: target, ln: ln, gate: open}
	t.Cleanup(func() { _ = ln.Close() })
	go p.serve()
	return p
}

func (p *holdProxy) addr() string { return p.ln.Addr().String() }

// hold keeps what the worker sends from now on.
func (p *holdProxy) hold() {
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
}

// release forwards what was kept, and all that follows.
func (p *holdProxy) release() {
	p.mu.Lock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
	p.mu.Unlock()
}

func (p *holdProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
		go func() { _, _ = io.Copy(client, server); _ = client.Close() }()
		go func() {
			defer server.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					p.mu.Lock()
					gate := p.gate
					p.mu.Unlock()
					<-gate
					if _, werr := server.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// TestWorkerStartedDuringAFreezeWaitsALeaseOfContact: a worker of h1
// started while nats-server is frozen (SIGSTOP) past the lease waits for
// NATS at its start, then connects at the thaw, when the server has
// expired every lease. A standby takes a lapsed lease only once the
// server has answered it for a whole lease since its last silence
// (contact.go), but the new process had heard no silence of its own: it
// took the key at once, before its live holder's renewal, and ended the
// order the holder ran (TestProbeWorkerStartedDuringNATSFreeze, 1 run
// in 5). Its start's wait for NATS now counts as a silence. Here the
// holder's renewals are held back (a proxy) from the freeze until the new
// worker waits on its contact, so that, without that, the new worker
// takes the host every time.
func TestWorkerStartedDuringAFreezeWaitsALeaseOfContact(t *testing.T) {
	s := newFaultStack(t)
	p := newHoldProxy(t, strings.TrimPrefix(s.natsURL, "nats://"))
	holder := s.startWorkerEnv("h1", "ORDERLY_NATS__URL=nats://"+p.addr())
	waitUntil(t, 60*time.Second, "h1's worker consuming", func() bool {
		return strings.Contains(readLog(holder.faultProc), "worker consuming")
	})
	s.nats.proc.signal(syscall.SIGSTOP)
	frozen := time.Now()
	p.hold()
	s.note("nats-server frozen, h1's holder held back; a second worker of h1 started")
	started := s.startWorker("h1")
	// The thaw waits for the new worker's first dial to go unanswered:
	// at a load average of 50 its process took 5 s to start, dialed a
	// server thawed a second before, heard no silence, and rightly took
	// a lease no renewal came to for a whole lease after (the holder's
	// were held back): the scenario had not happened.
	waitUntil(t, 60*time.Second, "the new worker to wait for the frozen nats-server", func() bool {
		return strings.Contains(readLog(started.faultProc), `msg="waiting for nats"`)
	})
	pause(t.Context(), time.Until(frozen.Add(4*time.Second))) // past the 2 s lease
	s.nats.proc.signal(syscall.SIGCONT)
	s.note("nats-server thawed")
	var took bool
	waitUntil(t, 60*time.Second, "the new worker to take the host or wait on its contact", func() bool {
		l := readLog(started.faultProc)
		took = strings.Contains(l, `msg="took the host over"`)
		return took || strings.Contains(l, "the NATS server answers again after a silence")
	})
	p.release()
	s.note("h1's holder released")
	if took {
		t.Fatalf("the worker started during the freeze took h1 from its live holder at the thaw:\n%s", logTail(started.log, 20))
	}
	pause(t.Context(), 6*time.Second) // three leases
	if l := readLog(started.faultProc); strings.Contains(l, `msg="took the host over"`) || !strings.Contains(l, "waiting as standby") {
		t.Fatalf("the worker started during the freeze did not leave h1 to its holder:\n%s", logTail(started.log, 20))
	}
	if l := readLog(holder.faultProc); strings.Contains(l, "host lease lost") {
		t.Fatalf("h1's holder lost its lease:\n%s", logTail(holder.log, 20))
	}
}
