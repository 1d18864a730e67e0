package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
)

// faultScript is what every order of a fault test runs, with $1 its tag,
// $2 the host's marker file, $3 the host's lock file, $4 a child's sleep
// argument (or "") and $5 how long it runs. The marker gets "S <tag>" at
// the start and "E <tag>" at the end: small O_APPEND writes, so lines from
// concurrent orders never mix. The lock is an flock that the kernel drops
// only when every process holding it (the shell and its sleep) is gone, so
// "S <tag> busy" proves that an earlier order of the host was still running
// when this one started. The optional child closes the lock: it is meant to
// be left behind by a crash and found by the orphan scan, not to count as
// an overlap.
const faultScript = `exec 9>>"$3"
b=
flock -n 9 || b=" busy"
echo "S $1$b" >> "$2"
if [ -n "$4" ]; then sleep "$4" 9>&- >/dev/null 2>&1 & fi
sleep "$5"
echo "E $1" >> "$2"
`

// faultOrder is one submission as the client saw it.
type faultOrder struct {
	tag       string
	host      string
	submitter string
	n         int // position in the submitter's own sequence
	child     string
	sent      time.Time
	answered  time.Time
	code      int // HTTP status; 0 when no answer arrived
	err       string
	id        uuid.UUID // from the 202
	attempts  int       // requests sent (more than one: retried with its Idempotency-Key)
	lastSent  time.Time // when the last of them was sent
	wait      bool      // sent with ?wait: a 200 carries the finished order
	nats      bool      // published to orderly.submit.<host>: its 202 is JetStream's ack
	status    string    // the order's status in a 202 or 200
	// idempotent: sent with "idempotent": true, so a successor requeues
	// it once instead of interrupting it (DESIGN §2.2): it may start a
	// second time, in its place.
	idempotent bool
}

// faultAnswer is what one request of a submission was answered, a retry
// as much as the first: the answers a retrying client saw before its
// last, which faultOrder does not keep.
type faultAnswer struct {
	at   time.Time
	sent time.Time // when its request was sent
	tag  string
	code int // HTTP status (a NATS publish: 202 acked, 0 not); 0 when no answer arrived
	err  string
	nats bool
}

// accepted reports whether the client was told the order is recorded: a
// 202, or a 200 (the finished order, for a ?wait or for a retry whose
// first attempt's order had already finished).
func (o *faultOrder) accepted() bool {
	return o.code == http.StatusAccepted || (o.code == http.StatusOK && (o.attempts > 1 || o.wait))
}

// faultLoad submits orders to several hosts from several submitters, each
// sequential (one request at a time), and tails each host's marker file.
type faultLoad struct {
	s      *faultStack
	hosts  []string
	nonce  string // makes the children's sleep arguments unique to this test
	client *http.Client
	tails  map[string]*markerTail
	// retry makes each submission carry an Idempotency-Key and be sent
	// again, as a client should, while it gets no answer or a 503.
	retry bool
	// waitEvery makes every waitEvery-th order of a submitter a ?wait=10
	// submission (0: none).
	waitEvery int
	// idempotentEvery marks every idempotentEvery-th order of each of the
	// load's submitters idempotent (0: none); never a scenario's victim.
	idempotentEvery int
	// viaNATS makes the submitters publish to orderly.submit.<host>
	// instead of POSTing, each on its own connection, one at a time, and
	// publish again with the same Nats-Msg-Id until JetStream acks.
	viaNATS bool
	// natsFor names submitters that publish over NATS though viaNATS is
	// off, beside others that POST.
	natsFor map[string]bool
	// natsOpts are the publishers' connection options beyond the load's
	// own (a credential, its inbox).
	natsOpts []nats.Option
	js       map[string]jetstream.JetStream // per submitter

	mu       sync.Mutex
	orders   []*faultOrder
	answers  []faultAnswer  // every request's answer, retries included
	next     map[string]int // per submitter
	children int
	held     map[string]bool // hosts the submitters leave alone for now
	inflight map[string]int  // requests under way, per host

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newFaultLoad prepares the marker files of hosts and starts tailing them.
func newFaultLoad(s *faultStack, hosts ...string) *faultLoad {
	l := &faultLoad{s: s, hosts: hosts, nonce: fmt.Sprintf("%09d", rand.IntN(1e9)),
		client: &http.Client{Timeout: 30 * time.Second}, tails: map[string]*markerTail{}, next: map[string]int{},
		held: map[string]bool{}, inflight: map[string]int{}}
	if s.creds != nil {
		// NATS submitters publish with the submitters' seed, in
		// SUBMITTERS, as an external one would.
		l.natsOpts = seedOptions(s.t, s.creds.Submitter, queue.SubmitterInbox)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var tw sync.WaitGroup
	s.t.Cleanup(func() {
		cancel()
		tw.Wait()
		killProcs(l.childPattern())
		for _, h := range hosts {
			killProcs(l.marker(h))
		}
		for _, pid := range procsWithEnv(faultOrderEnv, l.envTag("*")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	for _, h := range hosts {
		tl := &markerTail{path: l.marker(h)}
		l.tails[h] = tl
		tw.Add(1)
		go func() {
			defer tw.Done()
			tl.run(ctx)
		}()
	}
	return l
}

func (l *faultLoad) marker(host string) string {
	return filepath.Join(l.s.dir, "marker-"+host)
}

func (l *faultLoad) lock(host string) string {
	return filepath.Join(l.s.dir, "lock-"+host)
}

// childPattern matches the argv of every child this load's orders spawn.
func (l *faultLoad) childPattern() string { return "900." + l.nonce + "*" }

// envTag is what the order tagged tag carries in faultOrderEnv: the
// load's nonce and the tag, so that every process of this load's orders,
// and only of this load's, is found by its environment (envTagOf reads
// the tag back).
func (l *faultLoad) envTag(tag string) string { return l.nonce + ":" + tag }

// envTagOf is the tag of this load's order that pid belongs to by its
// environment, or "".
func (l *faultLoad) envTagOf(pid int) string {
	v, _ := procEnv(pid, faultOrderEnv)
	tag, ok := strings.CutPrefix(v, l.nonce+":")
	if !ok {
		return ""
	}
	return tag
}

// start runs n submitters, each submitting one order of 50 ms every
// period (plus the request's own time) to a random host, until stop.
func (l *faultLoad) start(n int, period time.Duration) {
	l.startRuns(n, period, "0.05")
}

// startRuns is start with orders that sleep dur (sleep's argument).
func (l *faultLoad) startRuns(n int, period time.Duration, dur string) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for i := range n {
		name := fmt.Sprintf("s%d", i+1)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for k := 0; ctx.Err() == nil; k++ {
				if host, ok := l.pick(); ok {
					idem := l.idempotentEvery > 0 && k%l.idempotentEvery == l.idempotentEvery-1
					l.submitOrder(name, host, k%5 == 4, idem, dur)
				}
				pause(ctx, period)
			}
		}()
	}
}

// pick chooses a random host that is not held.
func (l *faultLoad) pick() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var free []string
	for _, h := range l.hosts {
		if !l.held[h] {
			free = append(free, h)
		}
	}
	if len(free) == 0 {
		return "", false
	}
	return free[rand.IntN(len(free))], true
}

// hold stops the submitters from sending orders to host and waits until
// the host has nothing queued or running, so that a fault can hit it with
// exactly one order in flight.
func (l *faultLoad) hold(t testing.TB, host string) {
	t.Helper()
	l.mu.Lock()
	l.held[host] = true
	l.mu.Unlock()
	waitUntil(t, 60*time.Second, "host "+host+" idle", func() bool {
		l.mu.Lock()
		n := l.inflight[host]
		l.mu.Unlock()
		var busy int
		err := l.s.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE host = $1 AND status IN ('queued','running')`, host).Scan(&busy)
		return n == 0 && err == nil && busy == 0
	})
}

// release lets the submitters send orders to host again.
func (l *faultLoad) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, host)
}

// stop ends the submitters and waits for their last request.
func (l *faultLoad) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	l.wg.Wait()
}

// submit sends one order and records what the client saw. A submitter
// calls it sequentially, so its orders have a defined order.
func (l *faultLoad) submit(submitter, host string, withChild bool, dur string) *faultOrder {
	return l.submitOrder(submitter, host, withChild, false, dur)
}

// submitOrder is submit with the order idempotent or not. The scenarios'
// own victims never are: they expect the victim interrupted.
func (l *faultLoad) submitOrder(submitter, host string, withChild, idempotent bool, dur string) *faultOrder {
	l.mu.Lock()
	l.next[submitter]++
	o := &faultOrder{host: host, submitter: submitter, n: l.next[submitter]}
	o.nats = l.viaNATS || l.natsFor[submitter]
	o.wait = l.waitEvery > 0 && o.n%l.waitEvery == 0 && !o.nats
	o.idempotent = idempotent
	o.tag = fmt.Sprintf("%s-%d", submitter, o.n)
	if withChild {
		l.children++
		o.child = fmt.Sprintf("900.%s%d", l.nonce, l.children)
	}
	l.orders = append(l.orders, o)
	l.inflight[host]++
	l.mu.Unlock()

	body, _ := json.Marshal(map[string]any{"host": host, "command": "sh", "timeout_seconds": 120, "idempotent": o.idempotent,
		"args": []string{"-c", faultScript, "_", o.tag, l.marker(host), l.lock(host), o.child, dur},
		"env":  map[string]string{faultOrderEnv: l.envTag(o.tag)}})
	sent := time.Now()
	var code, attempts int
	var errText, status string
	var id uuid.UUID
	var lastSent time.Time
	for {
		attempts++
		lastSent = time.Now()
		if o.nats {
			code, errText = l.publish(submitter, host, body, o.tag)
		} else {
			// With two API replicas a client starts on one of its own
			// and goes to the other for each retry.
			urls := l.s.apiURLs()
			code, errText, id, status = l.send(urls[(o.n+attempts)%len(urls)], body, o.tag, o.wait)
		}
		l.mu.Lock()
		l.answers = append(l.answers, faultAnswer{at: time.Now(), sent: lastSent, tag: o.tag, code: code, err: errText, nats: o.nats})
		l.mu.Unlock()
		if !(l.retry || o.nats) || (code != 0 && code != http.StatusServiceUnavailable) || time.Since(sent) > drainBound {
			break
		}
		time.Sleep(time.Duration(50+rand.IntN(100)) * time.Millisecond)
	}
	answered := time.Now()
	l.mu.Lock()
	o.sent, o.answered, o.code, o.err, o.id, o.attempts, o.lastSent, o.status = sent, answered, code, errText, id, attempts, lastSent, status
	l.inflight[host]--
	l.mu.Unlock()
	return o
}

// publish sends one submission over NATS on submitter's connection and
// waits for JetStream's ack: 202 when it came (the order is in
// ORDERLY_SUBMIT, for the API's intake to record), 0 with the error when
// not.
func (l *faultLoad) publish(submitter, host string, body []byte, tag string) (code int, errText string) {
	l.mu.Lock()
	js := l.js[submitter]
	l.mu.Unlock()
	if js == nil {
		nc, err := nats.Connect(l.s.natsURL, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
			nats.RetryOnFailedConnect(true)}, l.natsOpts...)...)
		if err != nil {
			return 0, err.Error()
		}
		l.s.t.Cleanup(nc.Close)
		if js, err = jetstream.New(nc); err != nil {
			return 0, err.Error()
		}
		l.mu.Lock()
		if l.js == nil {
			l.js = map[string]jetstream.JetStream{}
		}
		l.js[submitter] = js
		l.mu.Unlock()
	}
	msg := nats.NewMsg(queue.SubmitSubject + host)
	msg.Data = body
	msg.Header.Set("Authorization", "Bearer "+l.s.token)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(l.nonce+"-"+tag)); err != nil {
		return 0, err.Error()
	}
	return http.StatusAccepted, ""
}

// send posts one submission to the API at base (with wait, as ?wait=10)
// and reads the answer: the HTTP status (0 when none came), the error
// text, and the order id and status of a 202 or 200.
func (l *faultLoad) send(base string, body []byte, tag string, wait bool) (code int, errText string, id uuid.UUID, status string) {
	url := base + "/v1/orders"
	if wait {
		url += "?wait=10"
	}
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		panic(err) // a constant URL and method
	}
	req.Header.Set("Authorization", "Bearer "+l.s.token)
	req.Header.Set("Content-Type", "application/json")
	if l.retry {
		req.Header.Set("Idempotency-Key", l.nonce+"-"+tag)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, err.Error(), uuid.Nil, ""
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ord api.Order
	if (resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK) && json.Unmarshal(b, &ord) == nil {
		return resp.StatusCode, "", ord.ID, string(ord.Status)
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), uuid.Nil, ""
}

// answersSoFar returns a copy of every request's answer so far.
func (l *faultLoad) answersSoFar() []faultAnswer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]faultAnswer(nil), l.answers...)
}

// snapshot returns a copy of the submissions so far.
func (l *faultLoad) snapshot() []faultOrder {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]faultOrder, len(l.orders))
	for i, o := range l.orders {
		out[i] = *o
	}
	return out
}

// waitStarted waits until the order with tag has started on host.
func (l *faultLoad) waitStarted(t testing.TB, host, tag string, d time.Duration) markerLine {
	t.Helper()
	var got markerLine
	waitUntil(t, d, "order "+tag+" starts on "+host, func() bool {
		for _, ml := range l.tails[host].snapshot() {
			if ml.start && ml.tag == tag {
				got = ml
				return true
			}
		}
		return false
	})
	return got
}

// waitTurn waits for order tag to start on host, its turn behind the
// orders the host was given before it, for as long as the host keeps
// starting orders: it fails once the host has started none for stall.
// What a victim's start needs is the contract's: its host runs orders,
// in order (checkContract). A bound on its start alone was a guess at
// the machine's pace: TestFaultsFleet's victim on f01 came behind 19
// orders after the fleet's restart, and at a load of 36 – 44 each took
// 3 – 4 s on every host (the claim's wait for a renewal younger than
// half the suite's 2 s lease, the 0.3 s order taking 0.5 – 1.2 s), so
// it was not started within the 30 s in any loaded run
// (docs/decisions.md, hE30).
func (l *faultLoad) waitTurn(t testing.TB, host, tag string, stall time.Duration) markerLine {
	t.Helper()
	began, last := time.Now(), time.Now()
	seen, ahead := 0, 0
	for {
		lines := l.tails[host].snapshot()
		for _, ml := range lines[seen:] {
			if !ml.start {
				continue
			}
			if ml.tag == tag {
				t.Logf("order %s started on %s %s after the wait began, behind %d orders started meanwhile",
					tag, host, ml.at.Sub(began).Round(10*time.Millisecond), ahead)
				return ml
			}
			if ml.at.After(began) {
				last = ml.at
				ahead++
			}
		}
		seen = len(lines)
		if time.Since(last) > stall {
			t.Fatalf("order %s starts on %s: the host started no order for %s (%d since the wait began, %s ago)",
				tag, host, stall, ahead, time.Since(began).Round(10*time.Millisecond))
		}
		pause(t.Context(), 10*time.Millisecond)
	}
}

// waitStarts waits until each host has started at least n orders.
func (l *faultLoad) waitStarts(t testing.TB, n int, d time.Duration) {
	t.Helper()
	waitUntil(t, d, fmt.Sprintf("every host starts %d orders", n), func() bool {
		for _, tl := range l.tails {
			if tl.starts() < n {
				return false
			}
		}
		return true
	})
}

// markerLine is one line of a marker file with the time the tail saw it
// (within the tail's 10 ms poll).
type markerLine struct {
	at    time.Time
	start bool // S, else E
	tag   string
	busy  bool // the host's lock was held when the order started
}

// markerTail follows one marker file.
type markerTail struct {
	path string

	mu    sync.Mutex
	lines []markerLine
	off   int64
	rest  []byte
}

func (m *markerTail) run(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m.poll()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// poll reads what was appended since the last poll.
func (m *markerTail) poll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := os.Open(m.path)
	if err != nil {
		return
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, m.off, 1<<30))
	if err != nil || len(b) == 0 {
		return
	}
	m.off += int64(len(b))
	now := time.Now()
	data := append(m.rest, b...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		f := strings.Fields(string(data[:i]))
		data = data[i+1:]
		if len(f) < 2 {
			continue
		}
		m.lines = append(m.lines, markerLine{at: now, start: f[0] == "S", tag: f[1], busy: len(f) > 2 && f[2] == "busy"})
	}
	m.rest = append([]byte(nil), data...)
}

func (m *markerTail) snapshot() []markerLine {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]markerLine(nil), m.lines...)
}

func (m *markerTail) starts() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.lines {
		if l.start {
			n++
		}
	}
	return n
}

// firstStartAfter is the first order start seen after at.
func (m *markerTail) firstStartAfter(at time.Time) (markerLine, bool) {
	for _, l := range m.snapshot() {
		if l.start && l.at.After(at) {
			return l, true
		}
	}
	return markerLine{}, false
}
