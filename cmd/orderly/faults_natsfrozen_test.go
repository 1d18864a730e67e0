package main

// nats-server frozen (SIGSTOP) under load, then thawed (hD19): a crash
// closes every connection and each client reconnects, but a frozen
// server keeps them open and answers nothing, so every client waits on
// its own timeouts instead: the API's PubAcks, the workers' pulls, acks
// and lease renewals (the lease is in JetStream KV: no holder renews it,
// and no standby can take it either), the live output. On the thaw the
// server's clock has moved on by the whole freeze: leases and ack
// timers expire at once, while the requests buffered in the sockets
// are served.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/queue"
)

// frozenLongScript is longScript with the fault suite's marker and lock
// (faultScript): $1 the tag, $2 the host's marker, $3 its lock, then
// longScript's arguments, so that the order counts in checkContract's
// starts, overlaps and orphans like any other of its host.
const frozenLongScript = `tag=$1 marker=$2
exec 9>>"$3"
b=
flock -n 9 || b=" busy"
echo "S $tag$b" >> "$marker"
shift 3
` + longScript + `echo "E $tag" >> "$marker"
`

// natsFreeze is one freeze of nats-server, from SIGSTOP to SIGCONT.
type natsFreeze struct {
	from, to time.Time
}

// TestFaultsNATSFrozen freezes nats-server (SIGSTOP) three times under
// the retrying load on two API replicas (sync ?wait and async REST
// submissions, one submitter publishing to orderly.submit.<host>), with
// a standby beside the worker of h1: for 4 s (past the 2 s lease, under
// the 10–15 s the clients' pings take to give the connection up), for
// 14 s (past the pings: every client drops its connection and dials a
// server that accepts and says nothing) and for 33 s (past the 30 s ack
// wait) while a long order of h1 prints with its follower, poller and
// NATS subscriber attached. Then the contract: nothing accepted lost,
// run twice or out of order, no overlap on a host (the standby must not
// take h1 on a view the freeze made stale while its holder runs the long
// order); every answer during the freezes 503 `unavailable` or no answer
// within the client's timeout, never a 500; each host runs orders again
// within the recovery bound of the thaw (h1: of its long order's end);
// the long order succeeds once and its watchers see its output and end;
// every order succeeds, since no worker died.
func TestFaultsNATSFrozen(t *testing.T) {
	s := newFaultStack(t)
	s.startReplica()
	shape := faultLoadShape{submitters: 4, period: faultPeriod, retry: true, waitEvery: 3, natsSubmitters: 1,
		timeout: 15 * time.Second}
	var freezes []natsFreeze
	freeze := func(r *faultRun, d time.Duration) time.Time {
		from := time.Now()
		r.s.nats.proc.signal(syscall.SIGSTOP)
		r.s.note("nats-server frozen for %s", d)
		pause(r.t.Context(), d)
		r.s.nats.proc.signal(syscall.SIGCONT)
		thawed := time.Now()
		r.s.note("nats-server thawed")
		freezes = append(freezes, natsFreeze{from, thawed})
		return thawed
	}
	const ticks, every, block = 200, "0.2", 1000
	var (
		longID  string
		longTag = runTag("long-frozen", t)
		ws      *longWatchers
		c       *client.Client
	)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := runFaultScenarioLoad(t, s, map[string]int{"h1": 2, "h2": 1}, shape, func(r *faultRun) {
		for _, d := range []time.Duration{4 * time.Second, 14 * time.Second} {
			freeze(r, d)
			r.fault("nats thawed", "h1")
			r.fault("nats thawed", "h2")
			r.untilRecovered(0, 20*time.Second, 2*time.Second)
		}
		var err error
		if c, err = client.New(s.apiURL, s.token); err != nil {
			t.Fatal(err)
		}
		sub, err := c.Submit(ctx, client.SubmitRequest{Host: "h1", Command: "sh", TimeoutSeconds: 180,
			Args: []string{"-c", frozenLongScript, "_", longTag, r.l.marker("h1"), r.l.lock("h1"),
				fmt.Sprint(ticks), every, fmt.Sprint(block), longTag, "0"},
			Env: map[string]string{faultOrderEnv: longTag}}, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		longID = sub.Order.ID.String()
		r.expect[longTag] = "succeeded"
		ws = watchLong(t, ctx, c, s.natsURL, "h1", longID)
		waitUntil(t, 60*time.Second, "the follow to read the long order's first ticks", func() bool {
			ws.mu.Lock()
			defer ws.mu.Unlock()
			return ws.stdout.Len() > 10*(block+11)
		})
		requireEnvTagged(t, longTag)
		ws.mu.Lock()
		before := ws.stdout.Len()
		ws.mu.Unlock()
		thawed := freeze(r, 33*time.Second)
		r.fault("nats thawed", "h2")
		// The long order prints on after the thaw: its follower gets
		// its output again.
		waitUntil(t, recoveryBound, "the follow to read the long order's output after the thaw", func() bool {
			ws.mu.Lock()
			defer ws.mu.Unlock()
			return ws.stdout.Len() > before+10*(block+11)
		})
		t.Logf("the follow read the long order's output again %s after the thaw", time.Since(thawed).Round(10*time.Millisecond))
		// h1 is busy with the long order until it ends: its recovery
		// counts from then.
		end := waitEnded(t, r.s, r.l, "h1", longTag, longID, 2*time.Minute)
		r.faults = append(r.faults, faultEvent{what: "long order ended after the thaw", host: "h1", at: end})
		r.s.note("long order ended")
	})
	if ws == nil {
		return // the scenario failed before the long order
	}
	o := ws.endedOnce(t, ctx, c, longID, longTag, r.l.marker("h1"), client.StatusSucceeded)
	full, fullErr := longOutput(ticks, block)
	ws.mu.Lock()
	t.Logf("follow: %d+%d bytes, missed %v, statuses %v, err %v; poll errors %d %v; finished events %v",
		ws.stdout.Len(), ws.stderr.Len(), ws.missed, ws.statuses, ws.followErr, ws.pollErrs, ws.pollFirst, ws.finished)
	ws.sawTheEnd(t, o)
	checkLongOutput(t, o, ws, full, fullErr, client.StatusSucceeded)
	ws.mu.Unlock()
	checkFrozenAnswers(t, r.l.answersSoFar(), freezes)
	// No worker died: a takeover from another instance was made on a
	// view the freeze made stale, whether or not its holder ran an order
	// then.
	checkNoTakeover(t, s)
	// No process died: an order that did not succeed was taken from a
	// live worker (a standby's takeover on the thaw interrupts it).
	rows, err := s.rows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range rows {
		if o.status != "succeeded" {
			t.Errorf("order %s (%s) on %s ended %s: %s", o.tag, o.id, o.host, o.status, o.err)
		}
	}
}

// checkNoTakeover fails t for each takeover a worker logged from another
// live instance ("took the host over" naming a previous owner other
// than itself): the first tenure of each host names none, a worker
// taking its own host again names itself.
func checkNoTakeover(t *testing.T, s *faultStack) {
	t.Helper()
	s.mu.Lock()
	workers := append([]*faultWorker(nil), s.workers...)
	s.mu.Unlock()
	for _, w := range workers {
		b, err := os.ReadFile(w.log)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			if !strings.Contains(line, `msg="took the host over"`) {
				continue
			}
			self, prev := instanceRE.FindStringSubmatch(line), previousOwnerRE.FindStringSubmatch(line)
			if self == nil || prev == nil || prev[1] == self[1] || prev[1] == `""` {
				continue
			}
			t.Errorf("%s took host %s from a live worker: %s", w.name, w.host, strings.TrimSpace(line))
		}
	}
}

var previousOwnerRE = regexp.MustCompile(`previous_owner=(\S+)`)

// waitEnded waits until the order id with tag has ended on host and
// returns when: its marker's E line, as the tail saw it, or, for an
// order ended otherwise (killed), when PostgreSQL was seen to hold it
// terminal.
func waitEnded(t *testing.T, s *faultStack, l *faultLoad, host, tag, id string, d time.Duration) time.Time {
	t.Helper()
	var at time.Time
	waitUntil(t, d, "order "+tag+" ends on "+host, func() bool {
		for _, ml := range l.tails[host].snapshot() {
			if !ml.start && ml.tag == tag {
				at = ml.at
				return true
			}
		}
		var st string
		if s.pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE id = $1`, id).Scan(&st) == nil &&
			st != "queued" && st != "running" {
			at = time.Now()
			return true
		}
		return false
	})
	return at
}

// checkFrozenAnswers checks every answer a client got, retries included,
// against what a frozen broker may cause: a REST request is answered
// 2xx, or 503 with the code `unavailable`, or not within its client's
// timeout; never another status. It logs, per freeze, the REST requests
// sent during it or in flight when it began: how many were answered 503
// and how long they waited for it, how many were accepted, and how
// long after the thaw the last answer came.
func checkFrozenAnswers(t *testing.T, answers []faultAnswer, freezes []natsFreeze) {
	t.Helper()
	codes := map[int]int{}
	for _, a := range answers {
		if a.nats {
			continue // a publish: acked (202) or not (0)
		}
		codes[a.code]++
		switch {
		case a.code == http.StatusOK || a.code == http.StatusAccepted || a.code == 0:
		case a.code == http.StatusServiceUnavailable && strings.Contains(a.err, `"code":"unavailable"`):
		default:
			t.Errorf("%s answered %d at %s: %s", a.tag, a.code, a.at.Format("15:04:05.000"), a.err)
		}
	}
	var seen []string
	for i, f := range freezes {
		var n503, accepted, none int
		var waitMin, waitMax time.Duration
		var last time.Time
		for _, a := range answers {
			if a.nats || a.sent.Before(f.from) && a.at.Before(f.from) || !a.sent.Before(f.to) {
				continue // not sent during the freeze nor in flight when it began
			}
			if a.at.After(last) {
				last = a.at
			}
			switch a.code {
			case http.StatusServiceUnavailable:
				n503++
				w := a.at.Sub(a.sent)
				if waitMin == 0 || w < waitMin {
					waitMin = w
				}
				waitMax = max(waitMax, w)
			case 0:
				none++
			default:
				accepted++
			}
		}
		seen = append(seen, fmt.Sprintf("freeze %d (%s): %d answered 503 after %s–%s, %d accepted, %d unanswered, the last answer %s after the thaw",
			i+1, f.to.Sub(f.from).Round(time.Second), n503, waitMin.Round(10*time.Millisecond), waitMax.Round(10*time.Millisecond),
			accepted, none, last.Sub(f.to).Round(10*time.Millisecond)))
	}
	t.Logf("REST answers (retries included) by status %v; %s", codes, strings.Join(seen, "; "))
}

// frozenNodeBound is how long after a cluster node froze each host may
// take to run an order again: the pings' 15 s to leave the node, an
// election of the leaders it held (4 – 9 s), and the worker's checks
// of a consumer that lost acks or a pull with it (up to 5 s each).
// Measured: 13.5 – 16.8 s in three runs of four, 24.6 s in one (hD19;
// not explained).
const frozenNodeBound = 45 * time.Second

// TestFaultsNATSClusterNodeFrozen freezes (SIGSTOP) the orders stream's
// leader, one node of a 3-node cluster with every stream at three
// replicas, for 25 s under the fault load on four hosts (h1 with a
// standby), then thaws it. The cluster must carry on without it: the
// other two elect leaders, the clients on the frozen node leave it once
// their pings go unanswered (10 – 15 s) and every host runs orders
// again while the node is still frozen; after the thaw, the node
// rejoins and nothing is lost, run twice, out of order or overlapping.
// A host whose worker (or the API) was on the frozen node waits for
// that (frozenNodeBound). A standby on another node may take h1 from a
// holder on the frozen one, as from any holder that cannot renew.
func TestFaultsNATSClusterNodeFrozen(t *testing.T) {
	hosts := []string{"h1", "h2", "h3", "h4"}
	s, c := newClusterFaultStack(t, hosts)
	s.startWorker("h1")
	for _, h := range hosts {
		s.startWorker(h)
	}
	l := newFaultLoad(s, hosts...)
	l.start(4, faultPeriod)
	defer l.stop()
	l.waitStarts(t, 5, 60*time.Second)
	r := &faultRun{t: t, s: s, l: l, hosts: hosts}

	js := c.jetStream(c.url(), "cluster-check")
	leader := streamLeader(t.Context(), js, queue.OrdersStream)
	if leader == "" {
		leader, _ = waitNewLeader(t, js, queue.OrdersStream, "")
	}
	// The test's own view from a node that stays up.
	other := c.names[0]
	if other == leader {
		other = c.names[1]
	}
	view := c.jetStream(c.node(other).url(), "cluster-view")
	frozen := c.node(leader).proc
	frozen.signal(syscall.SIGSTOP)
	defer frozen.signal(syscall.SIGCONT)
	froze := time.Now()
	s.note("nats node %s (the orders stream's leader) frozen", leader)
	for _, h := range hosts {
		r.fault("node "+leader+" frozen", h)
	}
	newLeader, took := waitNewLeader(t, view, queue.OrdersStream, leader)
	t.Logf("%s leads the orders stream %s after %s froze", newLeader, took.Round(10*time.Millisecond), leader)
	r.untilRecovered(0, frozenNodeBound, time.Second)
	pause(t.Context(), time.Until(froze.Add(25*time.Second)))
	frozen.signal(syscall.SIGCONT)
	s.note("nats node %s thawed", leader)
	for _, h := range hosts {
		r.fault("node "+leader+" thawed", h)
	}
	r.untilRecovered(0, clusterRecoveryBound, 3*time.Second)
	l.stop()
	t.Logf("drained in %s", s.waitDrained(drainBound).Round(10*time.Millisecond))
	checkContract(t, s, l, nil)
	var slowest []string
	for _, what := range []string{"frozen", "thawed"} {
		// Each host's wait for its next order, from the freeze and
		// from the thaw.
		var worst time.Duration
		for _, f := range r.faults {
			if !strings.HasSuffix(f.what, what) {
				continue
			}
			next, ok := l.tails[f.host].firstStartAfter(f.at)
			if !ok {
				t.Errorf("%s on %s: no order started on the host afterwards", f.what, f.host)
				continue
			}
			worst = max(worst, next.at.Sub(f.at))
		}
		slowest = append(slowest, fmt.Sprintf("node %s: %s", what, worst.Round(10*time.Millisecond)))
	}
	t.Logf("the slowest host's next order: %s", strings.Join(slowest, "; "))
}
