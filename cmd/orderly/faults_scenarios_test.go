package main

// Fault-injection suite (issue 7): real processes — nats-server, PostgreSQL,
// `orderly api`, `orderly worker` — under load from several submitters,
// with workers killed, stopped, frozen and restarted and the dependencies
// crashed, checked from outside by checkContract. docs/reliability.md says
// what each scenario guarantees.

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The load every scenario runs: submitters each sending one order every
// faultPeriod (plus the request's time) to a random host.
const (
	faultSubmitters = 3
	faultPeriod     = 300 * time.Millisecond
)

// faultRun is one scenario in progress.
type faultRun struct {
	t      *testing.T
	s      *faultStack
	l      *faultLoad
	hosts  []string
	faults []faultEvent
	// expect holds statuses particular orders must end in (by tag), on top
	// of the contract every scenario checks.
	expect map[string]string
}

// runFaultScenario starts the stack with workersPerHost workers for each
// host, runs the load, calls inject once every host is executing orders,
// keeps the load going until every faulted host recovered (plus a few
// seconds of orders after it) or for at most 20 s, then drains and checks
// the contract.
func runFaultScenario(t *testing.T, workersPerHost map[string]int, inject func(r *faultRun)) {
	runFaultScenarioOn(t, newFaultStack(t), workersPerHost, inject)
}

// runFaultScenarioOn is runFaultScenario on a stack made by the caller.
func runFaultScenarioOn(t *testing.T, s *faultStack, workersPerHost map[string]int, inject func(r *faultRun)) {
	runFaultScenarioLoad(t, s, workersPerHost, faultLoadShape{submitters: faultSubmitters, period: faultPeriod}, inject)
}

// faultLoadShape is the load a scenario runs.
type faultLoadShape struct {
	submitters int
	period     time.Duration
	dur        string // how long each order sleeps; "" for 50 ms
	retry      bool   // Idempotency-Key on each order, sent again until answered
	waitEvery  int    // every waitEvery-th order of a submitter is sent with ?wait=10
	// idempotentEvery: every idempotentEvery-th order of a submitter is
	// idempotent (requeued once by a successor, not interrupted).
	idempotentEvery int
	viaNATS         bool // the submitters publish to orderly.submit.<host> (faultLoad.viaNATS)
	// natsSubmitters is how many of the submitters (the last ones)
	// publish over NATS while the others POST.
	natsSubmitters int
	// timeout is how long a client waits for an answer before it gives
	// up on the request (and, with retry, sends it again); 0 for 30 s.
	timeout time.Duration
	// drain is how long the run waits, once the load stopped, for every
	// order to be terminal; 0 for drainBound.
	drain time.Duration
}

// runFaultScenarioLoad is runFaultScenarioOn with the load's shape. It
// returns the run, whose stack lives until the test ends.
func runFaultScenarioLoad(t *testing.T, s *faultStack, workersPerHost map[string]int, shape faultLoadShape, inject func(r *faultRun)) *faultRun {
	r := runFaultLoad(t, s, workersPerHost, shape, inject)
	checkContract(t, s, r.l, r.faults)
	for tag, want := range r.expect {
		var got string
		err := s.pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE args[4] = $1`, tag).Scan(&got)
		if err != nil || got != want {
			t.Errorf("order %s: status %q (%v), want %s", tag, got, err, want)
		}
	}
	return r
}

// runFaultLoad is runFaultScenarioLoad up to the check: the load, the
// fault, the recovery and the drain, for a scenario whose contract is
// not the whole of checkContract's.
func runFaultLoad(t *testing.T, s *faultStack, workersPerHost map[string]int, shape faultLoadShape, inject func(r *faultRun)) *faultRun {
	hosts := make([]string, 0, len(workersPerHost))
	for h := range workersPerHost {
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		for range workersPerHost[h] {
			s.startWorker(h)
		}
	}
	l := newFaultLoad(s, hosts...)
	l.retry, l.waitEvery, l.viaNATS, l.idempotentEvery = shape.retry, shape.waitEvery, shape.viaNATS, shape.idempotentEvery
	for i := shape.submitters - shape.natsSubmitters; i < shape.submitters; i++ {
		if l.natsFor == nil {
			l.natsFor = map[string]bool{}
		}
		l.natsFor[fmt.Sprintf("s%d", i+1)] = true
	}
	if shape.timeout > 0 {
		l.client.Timeout = shape.timeout
	}
	l.startRuns(shape.submitters, shape.period, cmp.Or(shape.dur, "0.05"))
	defer l.stop()
	l.waitStarts(t, 5, 60*time.Second)

	r := &faultRun{t: t, s: s, l: l, hosts: hosts, expect: map[string]string{}}
	inject(r)

	// Keep submitting until each faulted host ran an order after its last
	// fault, and then 3 s more, so that the orders held or redelivered
	// around the fault have later ones to be compared with.
	r.untilRecovered(0, 20*time.Second, 3*time.Second)
	l.stop()
	if shape.viaNATS || shape.natsSubmitters > 0 {
		s.waitSubmitStreamEmpty(drainBound)
	}
	took := s.waitDrained(cmp.Or(shape.drain, drainBound))
	t.Logf("drained in %s", took.Round(10*time.Millisecond))
	return r
}

// fault records that a fault hit host now.
func (r *faultRun) fault(what, host string) {
	r.faults = append(r.faults, faultEvent{what: what, host: host, at: time.Now()})
	r.s.note("%s on %s", what, host)
}

// untilRecovered waits at least least and at most most for every host
// hit by the last fault to run orders again, then for linger more. A host
// still waiting after most fails the test here, naming the fault, rather
// than only in the final check, where a later fault's recovery would be
// measured against it.
func (r *faultRun) untilRecovered(least, most, linger time.Duration) {
	began := time.Now()
	for time.Since(began) < most {
		if time.Since(began) >= least && len(r.unrecovered()) == 0 {
			pause(r.t.Context(), linger)
			return
		}
		pause(r.t.Context(), 50*time.Millisecond)
	}
	for _, f := range r.unrecovered() {
		r.t.Errorf("%s on %s at %s: no order started on the host within %s", f.what, f.host, f.at.Format("15:04:05.000"), most)
	}
}

// unrecovered returns the last fault of each host that has started no
// order since.
func (r *faultRun) unrecovered() []faultEvent {
	last := map[string]faultEvent{}
	for _, f := range r.faults {
		last[f.host] = f
	}
	var waiting []faultEvent
	for _, h := range slices.Sorted(maps.Keys(last)) {
		if _, ok := r.l.tails[h].firstStartAfter(last[h].at); !ok {
			waiting = append(waiting, last[h])
		}
	}
	return waiting
}

// resent logs how many submissions were sent more than once (what says
// why) and, with must, fails the test when none was: the faults then hit
// no request in flight, and the scenario tested nothing.
func (r *faultRun) resent(what string, must bool) {
	n := 0
	for _, o := range r.l.snapshot() {
		if o.attempts > 1 {
			n++
		}
	}
	r.t.Logf("%d submissions were %s", n, what)
	if must && n == 0 {
		r.t.Errorf("no submission was %s: the faults hit no request, the scenario tested nothing", what)
	}
}

// victim submits a long order with a child process to host, waits until it
// runs and returns the worker running it: the order a crash interrupts.
// With queued, it also waits for two more orders of the host to be
// accepted, so that the worker holds the next one when the fault hits.
func (r *faultRun) victim(host, dur string, queued bool) (*faultWorker, string) {
	r.t.Helper()
	return r.victimUnless(host, dur, queued, nil)
}

// victimUnless is victim for a set-up that something outside the test
// can undo before its fault (a machine stall past the lease hands the
// host to its standby, which interrupts the victim): when disturbed
// (nil: never) reports that, it returns no worker instead of failing
// the test while it looks for the one running the victim.
func (r *faultRun) victimUnless(host, dur string, queued bool, disturbed func() bool) (*faultWorker, string) {
	r.t.Helper()
	o := r.l.submit("v", host, true, dur)
	if !o.accepted() {
		r.t.Fatalf("victim order: HTTP %d %s", o.code, o.err)
	}
	began := r.l.waitTurn(r.t, host, o.tag, 30*time.Second).at
	// Let later orders of the host be accepted and reach the worker, which
	// holds the next one while the victim runs.
	waitUntil(r.t, 10*time.Second, "two more orders for "+host, func() bool {
		if !queued {
			return true
		}
		n := 0
		for _, o := range r.l.snapshot() {
			if o.host == host && o.accepted() && o.answered.After(began) {
				n++
			}
		}
		return n >= 2
	})
	if queued {
		pause(r.t.Context(), 200*time.Millisecond)
	}
	var w *faultWorker
	var byEnv []int
	waitUntil(r.t, 5*time.Second, "find the worker running "+o.tag, func() bool {
		w = r.s.workerRunning(o.tag, r.l.marker(host))
		if w != nil {
			byEnv = procsWithEnv(faultOrderEnv, r.l.envTag(o.tag))
		}
		return w != nil || disturbed != nil && disturbed()
	})
	if w != nil && len(byEnv) == 0 {
		// The orphan scan finds an order's processes by it too.
		r.t.Fatalf("no process of the running victim %s carries %s=%s", o.tag, faultOrderEnv, r.l.envTag(o.tag))
	}
	return w, o.tag
}

// TestFaultsWorkerStops stops the worker of a host while it runs an order
// with the next ones queued (and one held), then starts a new worker at
// once: kill -9 is a crash, SIGTERM a graceful stop, which lets the running
// order finish (worker.shutdown_grace, 30 s) even though a successor waits.
func TestFaultsWorkerStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		want string // the victim's status
	}{
		{"kill9", syscall.SIGKILL, "interrupted"},
		{"sigterm", syscall.SIGTERM, "succeeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runFaultScenario(t, map[string]int{"h1": 1, "h2": 1}, func(r *faultRun) {
				w, tag := r.victim("h1", "3", true)
				r.expect[tag] = tc.want
				w.signal(tc.sig)
				r.fault(tc.name, "h1")
				r.s.startWorker("h1")
			})
		})
	}
}

// TestFaultsWorkerFrozen freezes (SIGSTOP) the worker of a host running a
// long order, past its lease, while a standby waits. The standby must take
// over within the recovery bound and must not start anything while the
// frozen worker's order still runs: it has to kill it. The freeze lasts
// until the standby has run orders for 3 s, or 35 s, past the 30 s ack
// wait, when JetStream redelivers what the frozen worker held; then the
// worker is thawed (SIGCONT) and must not run anything any more. The
// frozen worker holds the host's next order too (next_held), or the host
// had nothing else queued when it froze (alone; the server still hands
// the frozen worker the next order submitted).
func TestFaultsWorkerFrozen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		alone bool
	}{
		{"next_held", false},
		{"alone", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runFaultScenario(t, map[string]int{"h1": 2, "h2": 1}, func(r *faultRun) {
				if tc.alone {
					r.l.hold(r.t, "h1")
				}
				w, tag := r.victim("h1", "60", !tc.alone)
				r.expect[tag] = "interrupted"
				w.signal(syscall.SIGSTOP)
				r.fault("sigstop", "h1")
				r.l.release("h1")
				r.untilRecovered(6*time.Second, 35*time.Second, 3*time.Second)
				w.signal(syscall.SIGCONT)
			})
		})
	}
}

// TestFaultsNATSRestart kills nats-server with SIGKILL under load and
// starts it again on the same port and store. With the tests' 2 s lease,
// four times, after outages shorter and longer than the lease; each
// restart is a chance to cut a lease renewal between the server's write
// and its reply. With the default 15 s lease, once after a 7 s outage:
// longer than a request's 5 s timeout, so renewals buffered while
// reconnecting are applied after the worker gave up on them, and the
// lease key survives the restart.
func TestFaultsNATSRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lease   string
		outages []time.Duration
	}{
		{"lease_2s", "2s", []time.Duration{time.Second, 6 * time.Second, 500 * time.Millisecond, 3 * time.Second}},
		{"lease_15s", "15s", []time.Duration{7 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFaultStackConf(t, func(conf string) string {
				return strings.Replace(conf, "lease_ttl: 2s", "lease_ttl: "+tc.lease, 1)
			})
			runFaultScenarioOn(t, s, map[string]int{"h1": 1, "h2": 1}, func(r *faultRun) {
				natsOutages(r, tc.outages)
			})
		})
	}
}

// TestFaultsPostgresRestart crash-restarts PostgreSQL (immediate mode:
// every session is cut mid-transaction) three times under load.
func TestFaultsPostgresRestart(t *testing.T) {
	runFaultScenario(t, map[string]int{"h1": 1, "h2": 1}, func(r *faultRun) {
		for i := range 3 {
			if i > 0 {
				pause(r.t.Context(), 3*time.Second)
			}
			r.s.pg.restartImmediate()
			r.fault("postgres back", "h1")
			r.fault("postgres back", "h2")
		}
	})
}

// TestFaultsAPIKilled SIGKILLs the API every 0.5–2 s for 20 s under a
// busier load, a third of the times while PostgreSQL is frozen and a
// third while nats-server is, and starts it again after up to half a
// second. Clients send each order with an Idempotency-Key and send it
// again until they get an answer, as a client of any HTTP API must; every
// third order asks to wait (?wait=10). A kill lands at any point of a
// submission: before the insert commits, between the commit and the
// publish (the retry, or the reconciler, publishes it), between the
// PubAck and the 202 (the retry is answered with the order, and a waiting
// retry waits for it). None may be lost, recorded twice, run twice, or
// run out of its client's order.
func TestFaultsAPIKilled(t *testing.T) {
	s := newFaultStack(t)
	// Short orders and more submitters than the other scenarios: more
	// requests are in flight when a kill lands, while the hosts still keep
	// up (about 20 orders a second each).
	shape := faultLoadShape{submitters: 4, period: 100 * time.Millisecond, dur: "0.01", retry: true, waitEvery: 3}
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		end := time.Now().Add(20 * time.Second)
		kills := 0
		for time.Now().Before(end) {
			pause(r.t.Context(), time.Duration(500+rand.IntN(1500))*time.Millisecond)
			// A third of the kills come while PostgreSQL stalls: the
			// inserts in flight commit after the API is gone, before
			// anything was published. Another third while nats-server
			// stalls: the orders are committed and their publishes sent,
			// and the PubAcks never reach anyone.
			frozen := func(sig syscall.Signal) {}
			switch kills % 3 {
			case 1:
				frozen = r.s.pg.signal
			case 2:
				frozen = r.s.nats.proc.signal
			}
			frozen(syscall.SIGSTOP)
			pause(r.t.Context(), 200*time.Millisecond)
			r.s.killAPI()
			kills++
			r.s.note("api kill9 (%d, mode %d)", kills, (kills-1)%3)
			frozen(syscall.SIGCONT)
			pause(r.t.Context(), time.Duration(rand.IntN(500))*time.Millisecond)
			r.s.startAPI()
			r.s.note("api started")
		}
		// Recovery counts from the last API coming back.
		for _, h := range r.hosts {
			r.fault("api back", h)
		}
		r.t.Logf("the API was killed %d times", kills)
	})
	// What the kills hit: a retried submission whose order PostgreSQL
	// recorded before its last attempt was sent had been committed by an
	// API that died before answering (and maybe before publishing).
	retried, committed := 0, 0
	for _, o := range r.l.snapshot() {
		if o.attempts < 2 || !o.accepted() {
			continue
		}
		retried++
		var at time.Time
		if err := s.pool.QueryRow(t.Context(), `SELECT submitted_at FROM orders WHERE id = $1`, o.id).Scan(&at); err != nil {
			t.Fatalf("read order %s: %v", o.id, err)
		}
		if at.Before(o.lastSent) {
			committed++
		}
	}
	t.Logf("%d submissions were sent again after a kill; %d of them had been recorded by the API that died", retried, committed)
	if retried == 0 {
		t.Errorf("no kill landed during a submission: the scenario tested nothing")
	}
}

// natsOutages kills nats-server (SIGKILL) once per outage, starts it again
// after that long, and waits for the hosts to recover between outages.
func natsOutages(r *faultRun, outages []time.Duration) {
	for i, outage := range outages {
		if i > 0 {
			r.untilRecovered(time.Second, 15*time.Second, time.Second)
		}
		r.s.nats.kill9()
		pause(r.t.Context(), outage)
		r.s.nats.start()
		r.fault("nats back", "h1")
		r.fault("nats back", "h2")
	}
}

// TestFaultsNATSRestartIntake is TestFaultsNATSRestart with the orders
// submitted over NATS (orderly.submit.<host>) by publishers that each
// wait for JetStream's ack before the next and publish again with the
// same Nats-Msg-Id when none came: nats-server is killed (SIGKILL) twice
// under that load, for 1 s and for 6 s (longer than a publish waits for
// its ack, so the first attempt, buffered by the client, and the retry
// both reach the stream). The API's intake settles what it held when the
// broker died. No submission acked by JetStream may be lost, recorded
// twice or run twice, and a publisher's orders run in the order it
// published them.
func TestFaultsNATSRestartIntake(t *testing.T) {
	s := newFaultStack(t)
	shape := faultLoadShape{submitters: faultSubmitters, period: 150 * time.Millisecond, viaNATS: true}
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		natsOutages(r, []time.Duration{time.Second, 6 * time.Second})
	})
	r.resent("published again after no ack came", false)
}

// TestFaultsAPIFrozen runs two API replicas and freezes one of them
// (SIGSTOP) for 3 s, four times, alternating, under the retrying load:
// clients give a request up after 1 s and send it again to the other
// replica with the same Idempotency-Key. The frozen replica then resumes
// requests whose clients have moved on: an insert that finds the key
// taken answers with the first order, a publish that comes late is
// deduplicated (or, past the window, only acknowledged by the worker),
// and nothing a thawed replica does may run an order twice or out of its
// client's order.
func TestFaultsAPIFrozen(t *testing.T) {
	s := newFaultStack(t)
	s.startReplica()
	shape := faultLoadShape{submitters: 4, period: 100 * time.Millisecond, dur: "0.01", retry: true, waitEvery: 3,
		timeout: time.Second}
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		for i := range 4 {
			p := r.s.api
			if i%2 == 1 {
				p = r.s.replica
			}
			pause(r.t.Context(), time.Duration(500+rand.IntN(1000))*time.Millisecond)
			p.signal(syscall.SIGSTOP)
			r.s.note("%s frozen", p.name)
			pause(r.t.Context(), 3*time.Second)
			p.signal(syscall.SIGCONT)
			r.s.note("%s thawed", p.name)
		}
		for _, h := range r.hosts {
			r.fault("api thawed", h)
		}
	})
	r.resent("sent again to the other replica", true)
}

// TestFaultsPostgresFrozen freezes PostgreSQL (SIGSTOP of the postmaster
// and every backend: a stall, not a crash; connections stay open) for 3 s,
// three times, 3 s apart, under the retrying load with clients that give a
// request up after 1 s. Each retry then races its own first attempt, whose
// insert waits in the frozen server and commits when it thaws (or is
// canceled, since its client went away): one order per key, never a 500.
// The workers' claims and results wait in the frozen server too, and go on
// where they stood.
func TestFaultsPostgresFrozen(t *testing.T) {
	s := newFaultStack(t)
	shape := faultLoadShape{submitters: faultSubmitters, period: faultPeriod, retry: true, timeout: time.Second}
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 1, "h2": 1}, shape, func(r *faultRun) {
		for i := range 3 {
			if i > 0 {
				pause(r.t.Context(), 3*time.Second)
			}
			r.s.pg.signal(syscall.SIGSTOP)
			r.s.note("postgres frozen")
			pause(r.t.Context(), 3*time.Second)
			r.s.pg.signal(syscall.SIGCONT)
			r.fault("postgres thawed", "h1")
			r.fault("postgres thawed", "h2")
		}
	})
	r.resent("sent again after their client gave up on an answer", true)
}

// TestFaultsRestartStorm kills (SIGKILL or SIGTERM) random workers of two
// hosts every 0.5–2.5 s for 35 s, replacing them at once, with a standby
// sometimes present. Every third order of each submitter is idempotent,
// so that some of the storm's victims are requeued rather than
// interrupted: run again once, in their place, never beside or after a
// later order.
func TestFaultsRestartStorm(t *testing.T) {
	runFaultScenarioLoad(t, newFaultStack(t), map[string]int{"h1": 1, "h2": 1},
		faultLoadShape{submitters: faultSubmitters, period: faultPeriod, idempotentEvery: 3}, func(r *faultRun) {
			storm(r, 35*time.Second)
		})
}

// TestFaultsSoak is the restart storm for 10 minutes with a nats-server
// and a PostgreSQL crash on the way. It is opt-in: `make soak` sets
// ORDERLY_SOAK=1.
func TestFaultsSoak(t *testing.T) {
	if os.Getenv("ORDERLY_SOAK") != "1" {
		t.Skip("soak test: run `make soak` (ORDERLY_SOAK=1)")
	}
	runFaultScenario(t, map[string]int{"h1": 1, "h2": 1}, func(r *faultRun) {
		for round := range 5 {
			storm(r, 2*time.Minute)
			if round%2 == 0 {
				r.s.nats.kill9()
				pause(r.t.Context(), 2*time.Second)
				r.s.nats.start()
			} else {
				r.s.pg.restartImmediate()
			}
			for _, h := range r.hosts {
				r.fault("dependency back", h)
				// As systemd's Restart=always would for a worker that
				// ended: one started by the storm while nats-server was
				// down waits for it with a backoff, so none is usually
				// missing here.
				if len(r.s.liveWorkers(h)) == 0 {
					r.t.Logf("host %s has no live worker after the dependency came back; starting one", h)
					r.s.startWorker(h)
				}
			}
		}
	})
}

// storm runs the restart storm for d. Only the last fault of each host is
// held to the recovery bound: earlier ones are often followed by another
// fault before the host could recover.
func storm(r *faultRun, d time.Duration) {
	end := time.Now().Add(d)
	var last []faultEvent
	for time.Now().Before(end) {
		pause(r.t.Context(), time.Duration(500+rand.IntN(2000))*time.Millisecond)
		host := r.hosts[rand.IntN(len(r.hosts))]
		live := r.s.liveWorkers(host)
		if len(live) == 0 || (len(live) < 2 && rand.IntN(4) == 0) {
			w := r.s.startWorker(host) // a standby
			r.s.note("storm start %s (pid %d)", w.name, w.pid())
			continue
		}
		w := live[rand.IntN(len(live))]
		what := "kill9"
		if rand.IntN(2) == 0 {
			what = "sigterm"
			w.signal(syscall.SIGTERM)
		} else {
			w.signal(syscall.SIGKILL)
		}
		r.s.note("storm %s %s (pid %d)", what, w.name, w.pid())
		last = append(last, faultEvent{what: "storm " + what, host: host, at: time.Now()})
		if len(live) == 1 || rand.IntN(2) == 0 {
			nw := r.s.startWorker(host)
			r.s.note("storm start %s (pid %d)", nw.name, nw.pid())
		}
	}
	r.t.Logf("storm: %d faults", len(last))
	for _, h := range r.hosts {
		for i := len(last) - 1; i >= 0; i-- {
			if last[i].host == h {
				r.faults = append(r.faults, last[i])
				break
			}
		}
	}
}
