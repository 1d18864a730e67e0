package main

import (
	"bytes"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
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
	return p.loggedSince(0, s)
}

// loggedSince reports whether the process's log has a line containing s
// past its first off bytes (logSize).
func (p *faultProc) loggedSince(off int64, s string) bool {
	b, err := os.ReadFile(p.log)
	return err == nil && int64(len(b)) > off && bytes.Contains(b[off:], []byte(s))
}

// logSize is how long the process's log is now.
func (p *faultProc) logSize() int64 {
	fi, err := os.Stat(p.log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// setUpAttempts bounds how often TestFaultsWorkerPartitioned/standby sets
// its victim up again after the standby took the host over before the
// partition.
const setUpAttempts = 3

// setUpDisturbed is set once ORDERLY_FAULTS_DISTURB_SETUP disturbed a
// set-up of TestFaultsWorkerPartitioned/standby: the first one of the
// test process only, so that -count=2 runs one of each.
var setUpDisturbed atomic.Bool

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
//     recorded during the 8 s partition (the worker still owns the host
//     in PostgreSQL); the held order waits for a renewal (its last one
//     older than half the lease); once it heals, the worker takes its
//     lapsed lease again, says so in its log, and the host runs the rest
//     in order.
//
// A machine stall past the 2 s lease before the partition (the whole
// machine: no process logs anything) can hand h1 to the standby during
// the set-up, which then interrupts the victim, rightly: the fault
// under test has not happened. The set-up is made again, up to
// setUpAttempts times, and the log says so: the standby that took h1 is
// SIGKILLed (a fault of its own, whose recovery is checked), the worker
// behind the proxy takes h1 back, a new standby waits, a new victim
// runs. Every order of the earlier attempts stays in the contract check.
// ORDERLY_FAULTS_DISTURB_SETUP makes that certain once: it freezes the
// worker behind the proxy until the standby took h1, before the first
// victim.
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
			var standby *faultWorker
			if tc.standby {
				standby = s.startWorker("h1")
			}
			// The standby took h1 (before the partition, while the set-up
			// runs).
			took := func() bool {
				return standby != nil && standby.logged("host lease taken after waiting as standby")
			}
			var injected int64 // the cut-off worker's log when the partition began
			runFaultScenarioOn(t, s, map[string]int{"h1": 0, "h2": 1}, func(r *faultRun) {
				dur, want := "4", "succeeded"
				if tc.standby {
					dur, want = "60", "interrupted"
				}
				if tc.standby && os.Getenv("ORDERLY_FAULTS_DISTURB_SETUP") != "" && setUpDisturbed.CompareAndSwap(false, true) {
					cut.signal(syscall.SIGSTOP)
					r.fault("sigstop of the worker behind the proxy (ORDERLY_FAULTS_DISTURB_SETUP)", "h1")
					waitUntil(r.t, 30*time.Second, "the standby takes h1 from the frozen worker", took)
					cut.signal(syscall.SIGCONT)
				}
				for attempt := 1; ; attempt++ {
					w, tag := r.victimUnless("h1", dur, true, took)
					if !took() {
						if w != cut {
							r.t.Fatalf("the victim runs on %s, not on the worker behind the proxy", w.name)
						}
						r.expect[tag] = want
						break
					}
					if attempt == setUpAttempts {
						r.t.Fatalf("the standby took h1 over before the partition in %d set-ups in a row", attempt)
					}
					on := "no worker"
					if w != nil {
						on = w.name
					}
					r.t.Logf("set-up %d: the standby %s took h1 over before the partition (a stall past the 2 s lease?) "+
						"while the victim %s ran on %s: killing the standby once its takeover is done, the worker behind "+
						"the proxy takes h1 back, set-up again", attempt, standby.name, tag, on)
					r.s.note("set-up %d disturbed: %s took h1 before the partition", attempt, standby.name)
					// Its takeover done, the victim is settled: killed
					// earlier, it would leave the victim running on the
					// worker behind the proxy, whose next tenure waits
					// for it.
					waitUntil(r.t, 30*time.Second, "the standby's takeover ends", func() bool {
						return standby.logged("worker consuming")
					})
					consuming := cut.logSize()
					standby.signal(syscall.SIGKILL)
					r.fault("kill9 of the standby that took the host during the set-up", "h1")
					waitUntil(r.t, 30*time.Second, "the worker behind the proxy takes h1 back", func() bool {
						return cut.loggedSince(consuming, "worker consuming")
					})
					standby = r.s.startWorker("h1")
					waitUntil(r.t, 30*time.Second, "the new standby waits", func() bool {
						return standby.logged("waiting as standby") || took()
					})
				}
				injected = cut.logSize()
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
			// took it: the worker took it again and says so. Only from
			// the partition on: a stall during the set-up may lapse the
			// lease too.
			if lapsed := cut.loggedSince(injected, "host lease had lapsed"); lapsed == tc.standby {
				t.Errorf("the cut-off worker logged a lapsed lease taken again after the partition: %v, want %v", lapsed, !tc.standby)
			}
		})
	}
}
