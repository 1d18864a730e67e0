package main

// The fault suite at fleet scale (hE17): the other scenarios hold the
// contract with one to three hosts; operators run many. Here every host is
// its own `orderly worker` process, all faulted at once.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// fleetFaultHosts is how many hosts TestFaultsFleet runs, one worker
// process each (ORDERLY_FAULTS_FLEET_HOSTS overrides it). 24 keeps the
// test reliable on a shared two-core machine; docs/decisions.md (hE17)
// has the runs with more.
const fleetFaultHosts = 24

// TestFaultsFleet runs 24 hosts, each its own worker process (one of them
// with a standby), under submitters that POST (with an Idempotency-Key,
// sent again while there is no answer) and publish over NATS to every
// host at once, and faults the whole fleet in turn: three workers
// SIGKILLed while they run an order and started again; nats-server
// killed for longer than the lease (every lease lapses, every process
// reconnects at once), two workers killed and started again meanwhile;
// PostgreSQL crash-restarted (every pool connects
// again at once); both together; every worker SIGKILLed at once and
// started again; one active worker frozen past its lease while its
// standby waits. Every host must recover from each fault, and the
// contract hold for each host (checkContract). Afterwards the orders
// stream holds one consumer per host and nothing else, no acknowledged
// order stays in it, and every connection PostgreSQL held was named
// after its process.
func TestFaultsFleet(t *testing.T) {
	n := fleetFaultHosts
	if v := os.Getenv("ORDERLY_FAULTS_FLEET_HOSTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 4 {
			t.Fatalf("ORDERLY_FAULTS_FLEET_HOSTS=%q: want a number of hosts, 4 or more", v)
		}
	}
	s := newFaultStack(t)
	if v := os.Getenv("ORDERLY_FAULTS_FLEET_PG_MAX_CONNS"); v != "" {
		if _, err := s.pool.Exec(t.Context(), "ALTER SYSTEM SET max_connections = "+v); err != nil {
			t.Fatal(err)
		}
		s.pg.restartImmediate()
	}
	conns := watchPGConnections(t, s)
	workers := map[string]int{}
	for i := range n {
		workers[fmt.Sprintf("f%02d", i+1)] = 1
	}
	const frozenHost = "f01"
	workers[frozenHost] = 2 // the active worker and a standby
	// Eight submitters at one order of 0.3 s each 100 ms: each host gets
	// an order every second or two, enough to see it recover, a fault
	// finds orders running on several hosts, and the two cores keep up.
	shape := faultLoadShape{submitters: 8, natsSubmitters: 4, period: 100 * time.Millisecond, dur: "0.3", retry: true, idempotentEvery: 3}
	recoveries := map[string]time.Duration{}
	r := runFaultScenarioLoad(t, s, workers, shape, func(r *faultRun) {
		// Three workers crash while they run an order, and are replaced.
		for _, h := range busyHosts(r, 3, frozenHost) {
			for _, w := range r.s.liveWorkers(h) {
				w.signal(syscall.SIGKILL)
				w.waitExit(10 * time.Second)
			}
			r.fault("kill9", h)
			r.s.startWorker(h)
		}
		recoveries["kill9 (3 hosts)"] = fleetRecovered(r, 30*time.Second)

		// nats-server dies for longer than the lease (2 s): every host's
		// lease lapses at once, and every worker, the API and the
		// publishers reconnect at once when it is back.
		// Two workers die during the outage and are started again before
		// it ends, as systemd's Restart= would: they must wait for
		// nats-server, not exit, and take their hosts once it is back.
		r.s.nats.kill9()
		for _, h := range slices.DeleteFunc(slices.Clone(r.hosts), func(h string) bool { return h == frozenHost })[:2] {
			for _, w := range r.s.liveWorkers(h) {
				w.signal(syscall.SIGKILL)
				w.waitExit(10 * time.Second)
			}
			r.s.startWorker(h)
		}
		pause(r.t.Context(), 4*time.Second)
		r.s.nats.start()
		for _, h := range r.hosts {
			r.fault("nats back", h)
		}
		recoveries["nats restart"] = fleetRecovered(r, 60*time.Second)

		// PostgreSQL crashes: every pool's connections are cut at once.
		r.s.pg.restartImmediate()
		for _, h := range r.hosts {
			r.fault("postgres back", h)
		}
		recoveries["postgres restart"] = fleetRecovered(r, 60*time.Second)

		// Both at once, as after a power cut in the rack that holds them.
		r.s.nats.kill9()
		r.s.pg.restartImmediate()
		pause(r.t.Context(), time.Second)
		r.s.nats.start()
		for _, h := range r.hosts {
			r.fault("nats and postgres back", h)
		}
		recoveries["nats and postgres restart"] = fleetRecovered(r, 60*time.Second)

		// Every worker is killed at once, in whatever it was doing, and
		// started again (a fleet-wide restart gone wrong): every host's
		// lease must expire, and every successor reaps what its
		// predecessor ran, all at the same time.
		var all []*faultWorker
		for _, h := range r.hosts {
			all = append(all, r.s.liveWorkers(h)...)
		}
		for _, w := range all {
			w.signal(syscall.SIGKILL)
		}
		for _, w := range all {
			w.waitExit(10 * time.Second)
		}
		for _, w := range all {
			r.s.startWorker(w.host)
		}
		for _, h := range r.hosts {
			r.fault("every worker kill9", h)
		}
		recoveries["every worker kill9"] = fleetRecovered(r, 60*time.Second)

		// The active worker of one host freezes past its lease (2 s)
		// while running an order; the standby takes over and must kill
		// that order before it starts the next.
		w, tag := r.victim(frozenHost, "20", false)
		r.expect[tag] = "interrupted"
		w.signal(syscall.SIGSTOP)
		r.fault("sigstop", frozenHost)
		thawed := holdFrozen(r, w)
		recoveries["sigstop past the lease"] = fleetRecovered(r, 30*time.Second)
		pause(r.t.Context(), 3*time.Second)
		if n := thawed(); n > 0 {
			r.t.Logf("%s was found running while frozen %d times, and stopped again", w.name, n)
		}
		w.signal(syscall.SIGCONT)
		r.s.note("sigcont %s", w.name)
	})
	var shown []string
	for _, what := range slices.Sorted(maps.Keys(recoveries)) {
		shown = append(shown, fmt.Sprintf("%s: %s", what, recoveries[what].Round(10*time.Millisecond)))
	}
	t.Logf("%d hosts; slowest host's recovery: %s", n, strings.Join(shown, ", "))
	conns.check(t, r.hosts)
	checkFleetStream(t, s, r.hosts)
}

// holdFrozen keeps w stopped until the returned function is called,
// which says how many times it found w running and stopped it again.
// Something outside the test thawed a frozen worker once in about a
// dozen runs (a SIGHUP and a SIGCONT 0.4 s after the SIGSTOP: its log
// shows the reload), and the freeze then tested nothing.
func holdFrozen(r *faultRun, w *faultWorker) func() int {
	r.t.Helper()
	waitUntil(r.t, 5*time.Second, w.name+" stopped", func() bool { return procState(w.pid()) == 'T' })
	done := make(chan struct{})
	var wg sync.WaitGroup
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if st := procState(w.pid()); st != 'T' && st != 0 && w.alive() {
				w.signal(syscall.SIGSTOP)
				n++
				r.s.note("%s found running (state %c) while frozen; stopped again", w.name, st)
			}
		}
	}()
	return func() int {
		close(done)
		wg.Wait()
		return n
	}
}

// busyHosts waits up to 10 s for n hosts other than except to be running
// an order, and returns them.
func busyHosts(r *faultRun, n int, except string) []string {
	r.t.Helper()
	var hosts []string
	waitUntil(r.t, 10*time.Second, fmt.Sprintf("%d hosts running an order", n), func() bool {
		hosts = hosts[:0]
		rows, err := r.s.pool.Query(r.t.Context(), `SELECT DISTINCT host FROM orders WHERE status = 'running' AND host <> $1`, except)
		if err != nil {
			return false
		}
		defer rows.Close()
		for rows.Next() {
			var h string
			if rows.Scan(&h) == nil {
				hosts = append(hosts, h)
			}
		}
		return rows.Err() == nil && len(hosts) >= n
	})
	return hosts[:n]
}

// fleetRecovered waits up to most for every host faulted by the last
// round of faults to start an order, and returns how long the slowest
// took (from its fault); untilRecovered fails the test past most.
func fleetRecovered(r *faultRun, most time.Duration) time.Duration {
	r.untilRecovered(0, most, 0)
	var slowest time.Duration
	for _, f := range lastFaults(r.faults) {
		if next, ok := r.l.tails[f.host].firstStartAfter(f.at); ok {
			slowest = max(slowest, next.at.Sub(f.at))
		}
	}
	return slowest
}

// lastFaults is the last fault of each host.
func lastFaults(faults []faultEvent) []faultEvent {
	last := map[string]faultEvent{}
	for _, f := range faults {
		last[f.host] = f
	}
	out := make([]faultEvent, 0, len(last))
	for _, h := range slices.Sorted(maps.Keys(last)) {
		out = append(out, last[h])
	}
	return out
}

// pgConnWatch samples, every 200 ms, the connections PostgreSQL holds,
// per application_name: orderly's processes name theirs after the
// process (orderly-api, orderly-worker-<host>), the test its own
// (faultTestPool).
type pgConnWatch struct {
	s      *faultStack
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	max        int            // max_connections
	peak       int            // most client connections at once
	peakByName map[string]int // most connections of each name at once
	// unnamed are the connections without a name seen in two samples in
	// a row (a pg_ctl ping or a migration's connection lives less).
	unnamed map[int32]int
}

func watchPGConnections(t *testing.T, s *faultStack) *pgConnWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &pgConnWatch{s: s, cancel: cancel, peakByName: map[string]int{}, unnamed: map[int32]int{}}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for ctx.Err() == nil {
			w.sample(ctx)
			pause(ctx, 200*time.Millisecond)
		}
	}()
	t.Cleanup(w.cancelWait)
	return w
}

func (w *pgConnWatch) sample(ctx context.Context) {
	rows, err := w.s.pool.Query(ctx, `SELECT pid, application_name, current_setting('max_connections')::int
		FROM pg_stat_activity WHERE backend_type = 'client backend'`)
	if err != nil {
		return // PostgreSQL is restarting; the pool connects again
	}
	defer rows.Close()
	byName := map[string]int{}
	unnamed := map[int32]bool{}
	total, maxConns := 0, 0
	for rows.Next() {
		var pid int32
		var name string
		if rows.Scan(&pid, &name, &maxConns) != nil {
			return
		}
		total++
		byName[name]++
		if name == "" {
			unnamed[pid] = true
		}
	}
	if rows.Err() != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.max = maxConns
	w.peak = max(w.peak, total)
	for name, n := range byName {
		w.peakByName[name] = max(w.peakByName[name], n)
	}
	for pid := range w.unnamed {
		if !unnamed[pid] {
			delete(w.unnamed, pid)
		}
	}
	for pid := range unnamed {
		w.unnamed[pid]++
	}
}

func (w *pgConnWatch) cancelWait() {
	w.cancel()
	w.wg.Wait()
}

// check ends the sampling, logs what it saw and fails t for a connection
// that stayed without the name of an orderly process or of the test:
// the operator of a fleet could not tell whose it is.
func (w *pgConnWatch) check(t *testing.T, hosts []string) {
	t.Helper()
	w.cancelWait()
	w.s.mu.Lock()
	workers := slices.Clone(w.s.workers)
	w.s.mu.Unlock()
	refused := 0
	for _, fw := range workers {
		b, _ := os.ReadFile(fw.log)
		refused += strings.Count(string(b), "too many clients")
	}
	known := map[string]bool{"orderly-api": true, faultTestPool: true}
	for _, h := range hosts {
		known["orderly-worker-"+h] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	busiest, most, workerConns := "", 0, 0
	for name, n := range w.peakByName {
		if strings.HasPrefix(name, "orderly-worker-") {
			workerConns += n
			if n > most {
				busiest, most = name, n
			}
		}
		if !known[name] && name != "" {
			t.Errorf("PostgreSQL connections named %q: not a process of the test", name)
		}
	}
	t.Logf("PostgreSQL connections: peak %d of max_connections %d (the API's %d, the test's %d; each worker at most %d, %s; "+
		"the workers' peaks summed %d); %d worker log lines with \"too many clients\"",
		w.peak, w.max, w.peakByName["orderly-api"], w.peakByName[faultTestPool], most, busiest, workerConns, refused)
	var stayed []int32
	for pid, n := range w.unnamed {
		if n >= 2 {
			stayed = append(stayed, pid)
		}
	}
	if len(stayed) > 0 {
		t.Errorf("PostgreSQL connections without an application_name, seen in two samples in a row (backend pids %v): "+
			"an operator cannot tell which process holds them", stayed)
	}
}

// checkFleetStream checks what the faults left in ORDERLY_ORDERS: one
// durable consumer per host of the test and no other, and, once the
// API's purge has gone round, no message left (every order was
// acknowledged).
func checkFleetStream(t *testing.T, s *faultStack, hosts []string) {
	t.Helper()
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatalf("connect to read ORDERLY_ORDERS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, queue.OrdersStream)
	if err != nil {
		t.Fatalf("stream %s: %v", queue.OrdersStream, err)
	}
	var names []string
	for name := range st.ConsumerNames(ctx).Name() {
		names = append(names, name)
	}
	var want []string
	for _, h := range hosts {
		want = append(want, queue.ConsumerName(h))
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("consumers of %s: %v, want one per host: %v", queue.OrdersStream, names, want)
	}
	for name := range js.StreamNames(ctx).Name() {
		if other, err := js.Stream(ctx, name); err == nil {
			info := other.CachedInfo()
			t.Logf("stream %s: %d messages, %d consumers", name, info.State.Msgs, info.State.Consumers)
		}
	}
	var msgs uint64
	began := time.Now()
	for time.Since(began) < time.Minute {
		info, err := st.Info(ctx)
		if err == nil {
			msgs = info.State.Msgs
			if msgs == 0 {
				break
			}
		}
		pause(ctx, 500*time.Millisecond)
	}
	t.Logf("%s: %d messages left %s after the check began", queue.OrdersStream, msgs, time.Since(began).Round(100*time.Millisecond))
	if msgs != 0 {
		t.Errorf("%s still holds %d messages a minute after every order was terminal", queue.OrdersStream, msgs)
	}
}
