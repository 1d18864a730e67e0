package main

import (
	"bytes"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stallProxy forwards TCP connections to a target and can stall them all,
// as a network partition does: nothing is closed and nothing gets through
// (what is sent waits in the socket buffers, then the senders block), and
// new connections are accepted but carry nothing. resume lets everything
// through again, in order, as TCP's retransmission would after a short
// partition.
type stallProxy struct {
	addr string
	gate atomic.Pointer[chan struct{}] // closed while traffic flows
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: ln.Addr().String()}
	open := make(chan struct{})
	close(open)
	p.gate.Store(&open)
	forward(t, ln, "tcp", target, p.pipe)
	t.Cleanup(p.resume) // before forward's cleanup, which waits for the pipes
	return p
}

// pipe copies src to dst, holding each chunk read while the proxy stalls.
func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-*p.gate.Load()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// stall stops all traffic through the proxy.
func (p *stallProxy) stall() {
	held := make(chan struct{})
	p.gate.Store(&held)
}

// resume lets traffic through again.
func (p *stallProxy) resume() {
	g := *p.gate.Load()
	select {
	case <-g: // already open
	default:
		close(g)
	}
}

// logged reports whether the process's log has a line containing s.
func (p *faultProc) logged(s string) bool {
	b, err := os.ReadFile(p.log)
	return err == nil && bytes.Contains(b, []byte(s))
}

// TestFaultsWorkerPartitioned cuts the worker of a host off from NATS
// while it runs an order, with the host's next orders queued (one held):
// its bus connection goes through a proxy that stops forwarding, as a
// partition does, while its PostgreSQL connection and its order's process
// stay up. Unlike a frozen worker, this one is awake throughout: it sees
// its renewals fail and writes to PostgreSQL, where the fence decides.
//
//   - standby: a standby on the bus takes over after the lease, kills the
//     60 s order (interrupted) before it runs anything and runs the rest
//     in order. The partition lasts until the standby has run orders for
//     3 s (at most 35 s); the cut-off worker's result and claim are refused
//     by the fence, and once the partition heals it runs nothing more.
//   - alone: nobody can take over. The 4 s order finishes and is
//     recorded, and the held order runs, during the 8 s partition (the
//     worker still owns the host in PostgreSQL); once it heals, the worker
//     takes its lapsed lease again, says so in its log, and the host runs
//     the rest in order.
func TestFaultsWorkerPartitioned(t *testing.T) {
	for _, tc := range []struct {
		name    string
		standby bool
	}{
		{"standby", true},
		{"alone", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFaultStack(t)
			px := startStallProxy(t, strings.TrimPrefix(s.nats.url(), "nats://"))
			cut := s.startWorkerEnv("h1", "ORDERLY_NATS__URL=nats://"+px.addr)
			waitUntil(t, 60*time.Second, "the worker behind the proxy takes h1", func() bool { return cut.logged("worker consuming") })
			if tc.standby {
				s.startWorker("h1")
			}
			runFaultScenarioOn(t, s, map[string]int{"h1": 0, "h2": 1}, func(r *faultRun) {
				dur, want := "4", "succeeded"
				if tc.standby {
					dur, want = "60", "interrupted"
				}
				w, tag := r.victim("h1", dur, true)
				if w != cut {
					r.t.Fatalf("the victim runs on %s, not on the worker behind the proxy", w.name)
				}
				r.expect[tag] = want
				px.stall()
				r.fault("partition", "h1")
				if tc.standby {
					r.untilRecovered(6*time.Second, 35*time.Second, 3*time.Second)
				} else {
					pause(r.t.Context(), 8*time.Second)
				}
				px.resume()
				r.fault("heal", "h1")
			})
			// Alone, the lease expired during the partition and nobody
			// took it: the worker took it again and says so.
			if lapsed := cut.logged("host lease had lapsed"); lapsed == tc.standby {
				t.Errorf("the cut-off worker logged a lapsed lease taken again: %v, want %v", lapsed, !tc.standby)
			}
		})
	}
}
