package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// The NATS ordering tests run the real shape of a deployment: three
// `orderly api` processes and one `orderly worker` process per host
// against one NATS and one PostgreSQL, and four publishers.
const (
	orderPublishers = 4
	orderPerPub     = 300
	// Each publisher sends a burst of orderBurst every orderPace: bursts
	// put several of its submissions in flight at once, and the pace
	// spreads them over ~15 s, so that the replicas are killed while
	// submissions still arrive.
	orderBurst = 10
	orderPace  = 500 * time.Millisecond
	// orderTakeover bounds the failover: the pinned TTL plus a rewind.
	orderTakeover = 20 * time.Second
)

var orderHosts = []string{"ord-a", "ord-b"}

// TestNATSOrderAcrossReplicas: with three API replicas taking NATS
// submissions, every host runs its orders in ORDERLY_SUBMIT order and each
// publisher's orders in its publish order; none is lost or run twice.
func TestNATSOrderAcrossReplicas(t *testing.T) {
	h := newOrderHarness(t)
	h.run(0, 0)
}

// TestNATSOrderReplicaKilled: the same while the replica that takes the
// submissions is killed with SIGKILL, twice: another replica takes over
// and the order, the count and the uniqueness of orders hold.
func TestNATSOrderReplicaKilled(t *testing.T) {
	h := newOrderHarness(t)
	h.run(2, syscall.SIGKILL)
}

// TestNATSOrderReplicaFrozen: the same while the replica that takes the
// submissions is frozen (SIGSTOP) until another has taken over, then
// thawed, twice: the thawed replica must not go on with what it held.
func TestNATSOrderReplicaFrozen(t *testing.T) {
	h := newOrderHarness(t)
	h.run(2, syscall.SIGSTOP)
}

// orderHarness is the processes of one ordering test.
type orderHarness struct {
	t       *testing.T
	dsn     string
	natsURL string
	token   string
	dir     string
	pool    *pgxpool.Pool
	apis    []*apiProc
	pins    chan *apiProc // a replica that logged being pinned
}

// apiProc is one `orderly api` process.
type apiProc struct {
	name   string
	cmd    *exec.Cmd
	ready  chan struct{}
	killed bool // SIGKILL: gone for good
	frozen bool // SIGSTOP: until another replica takes over
}

func newOrderHarness(t *testing.T) *orderHarness {
	h := &orderHarness{t: t, dsn: testenv.Postgres(t), natsURL: testenv.NATS(t), dir: t.TempDir(),
		pins: make(chan *apiProc, 64)}
	pool, err := postgres.Open(t.Context(), h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	h.pool = pool
	tok, sum := auth.NewToken()
	h.token = tok
	if _, err := postgres.New(pool).EnsureAPIToken(t.Context(), postgres.APIToken{Name: "admin", SHA256: sum, Roles: []string{"admin"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		h.apis = append(h.apis, h.startAPI(fmt.Sprintf("api-%d", i)))
	}
	for _, a := range h.apis {
		select {
		case <-a.ready:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not start", a.name)
		}
	}
	for _, host := range orderHosts {
		h.startWorker(host)
	}
	return h
}

func (h *orderHarness) env(extra ...string) []string {
	return append([]string{"ORDERLY_DATABASE_URL=" + h.dsn, "ORDERLY_NATS__URL=" + h.natsURL,
		"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms", "PATH=/usr/bin:/bin"}, extra...)
}

// startAPI starts a replica and follows its log for readiness and pins.
func (h *orderHarness) startAPI(name string) *apiProc {
	cmd := exec.Command(orderlyBin, "api")
	cmd.Env = h.env("ORDERLY_LISTEN=127.0.0.1:0", "ORDERLY_LOG__LEVEL=info",
		"ORDERLY_LIMITS__RATE_PER_IP=0", "ORDERLY_LIMITS__RATE_PER_PRINCIPAL=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	a := &apiProc{name: name, cmd: cmd, ready: make(chan struct{})}
	h.t.Cleanup(func() {
		if !a.killed {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		_ = cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.Contains(line, "api listening"):
				once.Do(func() { close(a.ready) })
			case strings.Contains(line, "nats intake pinned to this replica"):
				h.pins <- a
			case strings.Contains(line, "level=WARN"), strings.Contains(line, "level=ERROR"):
				h.t.Logf("%s: %s", name, line)
			}
		}
	}()
	return a
}

func (h *orderHarness) startWorker(host string) {
	cmd := exec.Command(orderlyBin, "worker", "--host", host)
	cmd.Env = h.env("ORDERLY_LOG__LEVEL=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
}

// submission is what a publisher knows of one of its submissions.
type submission struct {
	pub, i int
	host   string
	tag    string
	seq    uint64 // ORDERLY_SUBMIT stream sequence, from the PubAck
}

// publish runs one publisher: n submissions alternating between the
// hosts, asynchronously, each with its own Nats-Msg-Id.
func (h *orderHarness) publish(pub int) []*submission {
	t := h.t
	nc, err := nats.Connect(h.natsURL)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Error(err)
		return nil
	}
	var subs []*submission
	var futures []jetstream.PubAckFuture
	tick := time.NewTicker(orderPace)
	defer tick.Stop()
	for i := range orderPerPub {
		if i%orderBurst == 0 {
			<-tick.C
		}
		s := &submission{pub: pub, i: i, host: orderHosts[(i+pub)%len(orderHosts)], tag: fmt.Sprintf("p%d-%d", pub, i)}
		m := nats.NewMsg(queue.SubmitSubject + s.host)
		m.Header.Set("Authorization", "Bearer "+h.token)
		m.Header.Set("Nats-Msg-Id", s.tag)
		m.Header.Set("Orderly-Reply", fmt.Sprintf("_INBOX.order.p%d", pub))
		m.Data, _ = json.Marshal(map[string]any{"command": "sh",
			"args": []string{"-c", `echo "$1" >> "$2"`, "_", s.tag, filepath.Join(h.dir, s.host)}})
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Errorf("publish %s: %v", s.tag, err)
			return nil
		}
		subs = append(subs, s)
		futures = append(futures, f)
	}
	for k, f := range futures {
		select {
		case ack := <-f.Ok():
			subs[k].seq = ack.Sequence
		case err := <-f.Err():
			t.Errorf("publish %s: %v", subs[k].tag, err)
		case <-time.After(30 * time.Second):
			t.Errorf("publish %s: no PubAck", subs[k].tag)
		}
	}
	return subs
}

// run publishes from every publisher at once, sends the pinned replica
// sig (SIGKILL or SIGSTOP) faults times, each time once the replica has
// taken up a stretch of submissions, waits for every order to finish and
// checks the outcome. A frozen replica is thawed once another has taken
// the intake over.
func (h *orderHarness) run(faults int, sig syscall.Signal) {
	t := h.t
	results := make([][]*submission, orderPublishers)
	var wg sync.WaitGroup
	for p := range orderPublishers {
		wg.Add(1)
		go func() { defer wg.Done(); results[p] = h.publish(p) }()
	}
	total := orderPublishers * orderPerPub
	var faultAt time.Time
	var last *apiProc
	tookOver := func() *apiProc {
		a := h.awaitPinned(orderTakeover)
		took := time.Since(faultAt)
		t.Logf("%s took the intake over %s after %s", a.name, took.Round(time.Millisecond), sig)
		if took > orderTakeover {
			t.Errorf("takeover after %s, want within %s", took, orderTakeover)
		}
		if last.frozen {
			last.frozen = false
			if err := last.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		return a
	}
	for k := range faults {
		var victim *apiProc
		if k == 0 {
			victim = h.awaitPinned(60 * time.Second)
		} else {
			victim = tookOver()
		}
		// Let the victim take up a stretch of submissions first.
		h.awaitOrders(h.countOrders()+100, 60*time.Second)
		if err := victim.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		victim.killed, victim.frozen = sig == syscall.SIGKILL, sig == syscall.SIGSTOP
		faultAt, last = time.Now(), victim
		t.Logf("fault %d: %s sent %s with %d orders recorded", k+1, victim.name, sig, h.countOrders())
	}
	if faults > 0 {
		tookOver()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	h.awaitOrders(total, 3*time.Minute)
	h.awaitFinished(total, 3*time.Minute)
	h.check(results)
}

// awaitPinned returns the replica that most recently reported taking the
// intake, skipping reports of replicas killed or frozen.
func (h *orderHarness) awaitPinned(d time.Duration) *apiProc {
	deadline := time.After(d)
	for {
		select {
		case a := <-h.pins:
			if a.killed || a.frozen {
				continue
			}
			// A later report wins: drain what is already there.
			for more := true; more; {
				select {
				case b := <-h.pins:
					if !b.killed && !b.frozen {
						a = b
					}
				default:
					more = false
				}
			}
			return a
		case <-deadline:
			h.t.Fatal("no live replica took the NATS intake")
		}
	}
}

func (h *orderHarness) countOrders() int {
	var n int
	_ = h.pool.QueryRow(h.t.Context(), `SELECT count(*) FROM orders`).Scan(&n)
	return n
}

func (h *orderHarness) awaitOrders(n int, d time.Duration) {
	deadline := time.Now().Add(d)
	for h.countOrders() < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d orders recorded within %s, want %d", h.countOrders(), d, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *orderHarness) awaitFinished(n int, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		var done int
		_ = h.pool.QueryRow(h.t.Context(), `SELECT count(*) FROM orders WHERE status NOT IN ('queued','running')`).Scan(&done)
		if done >= n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d of %d orders finished within %s", done, n, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check compares what ran, in which order, with what was published.
func (h *orderHarness) check(results [][]*submission) {
	t := h.t
	byTag := map[string]*submission{}
	for _, subs := range results {
		for _, s := range subs {
			byTag[s.tag] = s
		}
	}
	var lost, dups, streamViolations, publisherViolations int
	ran := map[string]int{}
	for _, host := range orderHosts {
		data, err := os.ReadFile(filepath.Join(h.dir, host))
		if err != nil {
			t.Fatalf("host %s ran nothing: %v", host, err)
		}
		var lastSeq uint64
		lastOfPub := map[int]int{}
		for _, tag := range strings.Fields(string(data)) {
			ran[tag]++
			s := byTag[tag]
			if s == nil {
				t.Errorf("host %s ran %q, which nobody published", host, tag)
				continue
			}
			if s.host != host {
				t.Errorf("%s ran on %s, published for %s", tag, host, s.host)
			}
			if ran[tag] > 1 {
				continue // counted as a duplicate below, not as an order violation
			}
			if s.seq < lastSeq {
				streamViolations++
			}
			lastSeq = max(lastSeq, s.seq)
			if prev, ok := lastOfPub[s.pub]; ok && s.i < prev {
				publisherViolations++
			}
			lastOfPub[s.pub] = max(lastOfPub[s.pub], s.i)
		}
	}
	for tag, s := range byTag {
		switch c := ran[tag]; {
		case c == 0:
			lost++
			if lost <= 5 {
				t.Logf("lost: %s (stream seq %d)", tag, s.seq)
			}
		case c > 1:
			dups += c - 1
		}
	}
	var rows, keys, failed int
	_ = h.pool.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT idempotency_key),
		count(*) FILTER (WHERE status <> 'succeeded') FROM orders`).Scan(&rows, &keys, &failed)
	t.Logf("%d published, %d orders, %d lost, %d duplicates, %d stream-order violations, %d publisher-order violations",
		len(byTag), rows, lost, dups, streamViolations, publisherViolations)
	if lost+dups+streamViolations+publisherViolations > 0 {
		t.Errorf("%d lost, %d duplicates, %d stream-order violations, %d publisher-order violations; want none",
			lost, dups, streamViolations, publisherViolations)
	}
	if rows != len(byTag) || keys != rows || failed != 0 {
		t.Errorf("%d orders for %d submissions (%d distinct keys), %d not succeeded", rows, len(byTag), keys, failed)
	}
}
