package main

// A long order with its watchers attached while the stack fails under it
// (hE14): the fault suite's other scenarios run short orders, but the
// tools' users run deploys that print for minutes while a CLI follows
// them, a client polls and a NATS service waits for the finished event.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
)

// longScript prints $1 ticks, one every $2 seconds: on stdout a numbered
// line and a block of $3 x's, on stderr a numbered line. $4 is a tag that
// names the order's processes, then it sleeps $5 seconds more.
const longScript = `i=0
while [ $i -lt "$1" ]; do
  i=$((i+1))
  printf 'tick %05d\n' $i
  head -c "$3" /dev/zero | tr '\0' x
  echo
  printf 'err %05d\n' $i >&2
  sleep "$2"
done
sleep "$5"
`

// requireEnvTagged fails t unless a live process carries
// faultOrderEnv=tag: a running order's processes must, or the scans for
// what it left would look for nothing.
func requireEnvTagged(t *testing.T, tag string) {
	t.Helper()
	if len(procsWithEnv(faultOrderEnv, tag)) == 0 {
		t.Fatalf("no process of the running order %s carries %s=%s", tag, faultOrderEnv, tag)
	}
}

// startedScript is script (longScript, escapingScript) with a first line
// that appends "S <tag>" ($4) to the file $6: the order's starts counted
// from outside. Its attempt, the claims PostgreSQL counted, cannot show
// a second run under one claim.
func startedScript(script string) string {
	return `echo "S $4" >> "$6"` + "\n" + script
}

// countStarts is how many times marker records a start of the order
// tagged tag ("S <tag>", as startedScript and faultScript write them).
func countStarts(t *testing.T, marker, tag string) int {
	t.Helper()
	b, err := os.ReadFile(marker)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read the starts of %s: %v", tag, err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "S" && f[1] == tag {
			n++
		}
	}
	return n
}

// longOutput is what longScript prints on stdout and stderr.
func longOutput(ticks, block int) (stdout, stderr []byte) {
	var o, e bytes.Buffer
	x := bytes.Repeat([]byte{'x'}, block)
	for i := 1; i <= ticks; i++ {
		fmt.Fprintf(&o, "tick %05d\n", i)
		o.Write(x)
		o.WriteByte('\n')
		fmt.Fprintf(&e, "err %05d\n", i)
	}
	return o.Bytes(), e.Bytes()
}

// longWatchers are the clients watching one order: the CLI's follow
// (client.Follow: SSE with Last-Event-ID, then polling), a client polling
// GET, and a NATS subscriber waiting for the finished event.
type longWatchers struct {
	wg sync.WaitGroup

	mu             sync.Mutex
	followed       *client.Order
	followErr      error
	stdout, stderr bytes.Buffer
	missed         map[string]int64
	statuses       []client.Status
	polled         *client.Order
	pollErrs       int
	pollCodes      map[int]int     // the polls' error answers by HTTP status
	pollFirst      map[int]string  // the first error answer of each status, with when
	finished       []client.Status // the finished events' statuses
	away           []awaySpan      // the NATS subscriber's disconnections
}

// awaySpan is a time the NATS subscriber was disconnected: from its
// disconnection to its reconnection (zero while still away).
type awaySpan struct{ from, to time.Time }

func (a awaySpan) String() string {
	to := "still away"
	if !a.to.IsZero() {
		to = a.to.Format("15:04:05.000")
	}
	return a.from.Format("15:04:05.000") + " – " + to
}

// awayNear is how near a disconnection an order's end may be to count
// as published while the subscriber was away: the event is published
// after the end's commit, and the server takes the subscription back
// from the reconnected client after the client says it reconnected.
const awayNear = 500 * time.Millisecond

// awayAt reports whether the NATS subscriber was disconnected at, or
// within awayNear of, at. ws is locked by the caller.
func (ws *longWatchers) awayAt(at time.Time) bool {
	for _, a := range ws.away {
		if !at.Before(a.from.Add(-awayNear)) && (a.to.IsZero() || !at.After(a.to.Add(awayNear))) {
			return true
		}
	}
	return false
}

func watchLong(t *testing.T, ctx context.Context, c *client.Client, natsURL, host, id string, natsOpts ...nats.Option) *longWatchers {
	w := &longWatchers{missed: map[string]int64{}, pollCodes: map[int]int{}, pollFirst: map[int]string{}}
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		o, err := c.Follow(ctx, id, client.FollowOptions{
			Stdout: lockedWriter{&w.mu, &w.stdout}, Stderr: lockedWriter{&w.mu, &w.stderr},
			OnStatus: func(s client.Status) { w.mu.Lock(); w.statuses = append(w.statuses, s); w.mu.Unlock() },
			OnMissed: func(stream string, n int64) { w.mu.Lock(); w.missed[stream] += n; w.mu.Unlock() },
		})
		w.mu.Lock()
		w.followed, w.followErr = o, err
		w.mu.Unlock()
	}()
	go func() {
		defer w.wg.Done()
		for ctx.Err() == nil {
			o, err := c.Get(ctx, id)
			if err != nil {
				w.mu.Lock()
				w.pollErrs++
				if ae, ok := errors.AsType[*client.Error](err); ok {
					if w.pollCodes[ae.Status]++; w.pollCodes[ae.Status] == 1 {
						w.pollFirst[ae.Status] = time.Now().UTC().Format("15:04:05.000 ") + ae.Error()
					}
				}
				w.mu.Unlock()
			} else if o.Status.Terminal() {
				w.mu.Lock()
				w.polled = o
				w.mu.Unlock()
				return
			}
			pause(ctx, 500*time.Millisecond)
		}
	}()
	nc, err := nats.Connect(natsURL, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			w.mu.Lock()
			w.away = append(w.away, awaySpan{from: time.Now()})
			w.mu.Unlock()
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			w.mu.Lock()
			if n := len(w.away); n > 0 && w.away[n-1].to.IsZero() {
				w.away[n-1].to = time.Now()
			}
			w.mu.Unlock()
		})}, natsOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe("orderly.events."+host+"."+id, func(m *nats.Msg) {
		var ev queue.Event
		if json.Unmarshal(m.Data, &ev) != nil || ev.Type != "finished" {
			return
		}
		w.mu.Lock()
		w.finished = append(w.finished, client.Status(ev.Status))
		w.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestFaultsLongOrderWatchers runs one long order (about 40 s of output,
// 10.6 MiB on stdout: past the 10 MiB cap) on a split API and worker with
// its watchers attached, and fails the stack under it once its output has
// begun: the API killed and started again, nats-server killed and started
// again, PostgreSQL crash-restarted, the worker killed. The order must run
// once and end as DESIGN says (succeeded after a dependency's restart,
// interrupted after its worker's death, with no process of it left); the
// kept output is the capped prefix of what it printed; the follow writes
// a prefix of the kept output and says what it missed, never something
// else; the polling client and the NATS subscriber see the end. With
// timeout, the order prints for longer than its timeout, which must still
// end it after the faults.
func TestFaultsLongOrderWatchers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout float64
		want    client.Status
		inject  func(s *faultStack, w *faultWorker)
	}{
		{"api_kill9", 0, client.StatusSucceeded, func(s *faultStack, _ *faultWorker) {
			s.killAPI()
			pause(s.t.Context(), 3*time.Second)
			s.startAPI()
		}},
		{"nats_restart", 0, client.StatusSucceeded, func(s *faultStack, _ *faultWorker) {
			s.nats.kill9()
			pause(s.t.Context(), 3*time.Second)
			s.nats.start()
		}},
		{"postgres_restart", 0, client.StatusSucceeded, func(s *faultStack, _ *faultWorker) {
			s.pg.restartImmediate()
		}},
		{"worker_kill9", 0, client.StatusInterrupted, func(s *faultStack, w *faultWorker) {
			w.signal(syscall.SIGKILL)
			w.waitExit(10 * time.Second)
			s.startWorker(w.host)
		}},
		{"timeout_after_faults", 25, client.StatusTimedOut, func(s *faultStack, _ *faultWorker) {
			s.nats.kill9()
			pause(s.t.Context(), 2*time.Second)
			s.nats.start()
			s.pg.restartImmediate()
			s.killAPI()
			s.startAPI()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runLongOrderFault(t, tc.timeout, tc.want, tc.inject)
		})
	}
}

func runLongOrderFault(t *testing.T, timeout float64, want client.Status, inject func(s *faultStack, w *faultWorker)) {
	const ticks, every, block = 160, "0.2", 70000
	s := newFaultStack(t)
	w := s.startWorker("h1")
	c, err := client.New(s.apiURL, s.token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	tag := runTag("long", t)
	sleepAfter := "0"
	if timeout > 0 {
		sleepAfter = "60"
	}
	marker := filepath.Join(s.dir, "marker-long")
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "h1", Command: "sh", TimeoutSeconds: cmp.Or(timeout, 180),
		Args: []string{"-c", startedScript(longScript), "_", fmt.Sprint(ticks), every, fmt.Sprint(block), tag, sleepAfter, marker},
		Env:  map[string]string{faultOrderEnv: tag}}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Order.ID.String()
	ws := watchLong(t, ctx, c, s.natsURL, "h1", id)
	// Let the order print for a while, with the follow reading it.
	waitUntil(t, 60*time.Second, "the follow to read 1 MiB", func() bool {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return ws.stdout.Len() > 1<<20
	})
	requireEnvTagged(t, tag)
	s.note("inject")
	inject(s, w)
	s.note("injected")
	o := ws.endedOnce(t, ctx, c, id, tag, marker, want)
	if timeout > 0 && o.StartedAt != nil && o.FinishedAt != nil {
		ran := o.FinishedAt.Sub(*o.StartedAt)
		// Whole run: ticks × 0.2 s + 60 s; the timeout ends it well before.
		if ran < time.Duration(timeout*float64(time.Second)) || ran > 70*time.Second {
			t.Errorf("ran %s with a %gs timeout", ran, timeout)
		}
	}
	full, fullErr := longOutput(ticks, block)
	ws.mu.Lock()
	defer ws.mu.Unlock()
	t.Logf("follow: %d+%d bytes, missed %v, statuses %v, err %v; poll errors %d; finished events %v",
		ws.stdout.Len(), ws.stderr.Len(), ws.missed, ws.statuses, ws.followErr, ws.pollErrs, ws.finished)
	ws.sawTheEnd(t, o)
	checkLongOutput(t, o, ws, full, fullErr, want)
}

// endedOnce waits (3 minutes at most) for every watcher of order id to
// end after a fault, then checks from outside that the order ended want,
// with a reason unless it succeeded, ran once (one claim, and one start
// in marker), and left no process carrying tag, in its argv or its
// environment (orderProcs). It returns the order as the API has it.
func (ws *longWatchers) endedOnce(t *testing.T, ctx context.Context, c *client.Client, id, tag, marker string, want client.Status) *client.Order {
	t.Helper()
	done := make(chan struct{})
	go func() { ws.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the watchers still wait 3 minutes after the fault")
	}
	o, err := c.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != want {
		t.Errorf("status %s, want %s (result %+v)", o.Status, want, o.Result)
	}
	if (o.Status == client.StatusInterrupted || o.Status == client.StatusKilled) && (o.Result == nil || o.Result.Error == nil || *o.Result.Error == "") {
		t.Errorf("%s without a reason: %+v", o.Status, o.Result)
	}
	if o.Attempt > 1 {
		t.Errorf("attempt %d: the order ran again", o.Attempt)
	}
	if n := countStarts(t, marker, tag); n != 1 {
		t.Errorf("the order started %d times (its marker), want once", n)
	}
	if pids := orderProcs(tag); len(pids) > 0 {
		t.Errorf("processes of the order left after it ended: %v", pids)
	}
	return o
}

// sawTheEnd checks that each watcher ended with the order's status o:
// the follow, the poller, and the NATS subscriber with one finished
// event — or none, when the order ended while the subscriber was
// disconnected (a NATS restart): a finished event is a plain NATS
// message, kept for nobody, as the README says of answers. A serve
// restarted after a SIGKILL marks its order interrupted ~0.1 s after its
// embedded NATS is back, before a subscriber's reconnect. Never two,
// never another status. ws is locked by the caller.
func (ws *longWatchers) sawTheEnd(t *testing.T, o *client.Order) {
	t.Helper()
	if ws.followErr != nil {
		t.Errorf("follow: %v", ws.followErr)
	} else if ws.followed.Status != o.Status {
		t.Errorf("follow ended with %s, the order is %s", ws.followed.Status, o.Status)
	}
	if ws.polled == nil || ws.polled.Status != o.Status {
		t.Errorf("the polling client did not see the end: %+v", ws.polled)
	}
	switch {
	case len(ws.finished) == 1 && ws.finished[0] == o.Status:
	case len(ws.finished) == 0 && o.FinishedAt != nil && ws.awayAt(*o.FinishedAt):
		t.Logf("the NATS subscriber was disconnected when the order ended (%s; away %v): no finished event, as plain NATS keeps none",
			o.FinishedAt.Format("15:04:05.000"), ws.away)
	default:
		t.Errorf("the NATS subscriber saw finished events %v, want one %s (away %v, the order ended %v)",
			ws.finished, o.Status, ws.away, o.FinishedAt)
	}
}

// checkLongOutput checks what a long order kept and what its follow wrote
// against what it printed (full, fullErr); ws is locked by the caller.
func checkLongOutput(t *testing.T, o *client.Order, ws *longWatchers, full, fullErr []byte, want client.Status) {
	t.Helper()
	if o.Result == nil {
		t.Fatalf("no result")
	}
	for _, st := range []struct {
		name     string
		kept     client.Stream
		printed  []byte
		followed []byte
	}{
		{"stdout", o.Result.Stdout, full, ws.stdout.Bytes()},
		{"stderr", o.Result.Stderr, fullErr, ws.stderr.Bytes()},
	} {
		kept, err := st.kept.Decode()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		head := order.Output{Content: kept, Bytes: st.kept.Bytes, Truncated: st.kept.Truncated}.Head()
		if head == nil {
			t.Fatalf("%s: truncated kept output without its marker", st.name)
		}
		if !bytes.HasPrefix(st.printed, head) {
			t.Errorf("%s: the kept head (%d bytes) is not a prefix of what was printed", st.name, len(head))
		}
		if want == client.StatusSucceeded {
			if st.kept.Bytes != int64(len(st.printed)) {
				t.Errorf("%s: %d bytes counted, %d printed", st.name, st.kept.Bytes, len(st.printed))
			}
			if tail := kept[len(head):]; st.kept.Truncated {
				tail = tail[bytes.Index(tail, []byte("]…\n"))+len("]…\n"):] // after the marker
				if !bytes.HasSuffix(st.printed, tail) {
					t.Errorf("%s: the kept tail (%d bytes) is not the end of what was printed", st.name, len(tail))
				}
			}
		}
		if st.kept.Truncated && len(kept) > 10<<20+100 {
			t.Errorf("%s: %d bytes kept, over the cap", st.name, len(kept))
		}
		// What the follow wrote is the stream: what it streamed, then
		// (past the live cap or a lost live stream) the rest of the
		// stored copy, with the copy's marker for what neither holds.
		followed, after := st.followed, []byte(nil)
		if n := ws.missed[st.name]; n > 0 {
			m := []byte(order.TruncationMarker(n))
			i := bytes.LastIndex(followed, m)
			if i < 0 {
				t.Errorf("%s: %d bytes missed and no marker for them in what the follow wrote", st.name, n)
				continue
			}
			followed, after = followed[:i], followed[i+len(m):]
			if !bytes.HasSuffix(kept, after) {
				t.Errorf("%s: after the marker the follow wrote %d bytes that are not the kept tail", st.name, len(after))
			}
		}
		if !bytes.HasPrefix(st.printed, followed) {
			t.Errorf("%s: the follow wrote %d bytes that are not a prefix of what was printed", st.name, len(followed))
		}
		if got := int64(len(followed)) + ws.missed[st.name] + int64(len(after)); got != st.kept.Bytes {
			t.Errorf("%s: the follow wrote %d bytes, %d missed and %d after them, the stream is %d", st.name, len(followed),
				ws.missed[st.name], len(after), st.kept.Bytes)
		}
	}
}

// TestLongOrderBusCost counts what a running order adds to its worker's
// NATS traffic with the default timings (nats.heartbeat 5 s, lease 15 s,
// ack_wait 30 s), over 30 s idle and 30 s while a quiet order (sleep)
// runs: every message on the worker's subjects, seen by a subscriber to
// all, and everything the worker's connection sent, from the server's
// /connz. A running order adds an InProgress every third of the ack wait
// (10 s: 3 in the window) and nothing per heartbeat: the lease and info
// writes go on one each per 5 s, as when idle, and so do the pulls
// (docs/scaling.md: 3 messages per 5 s).
func TestLongOrderBusCost(t *testing.T) {
	s := newFaultStackConf(t, func(conf string) string {
		return strings.NewReplacer("lease_ttl: 2s", "lease_ttl: 15s", "heartbeat: 300ms", "heartbeat: 5s").Replace(conf)
	})
	s.startWorker("h1")
	c, err := client.New(s.apiURL, s.token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// A first order: the worker has taken the host and consumes.
	if _, err := c.Submit(ctx, client.SubmitRequest{Host: "h1", Command: "true"}, client.SubmitOptions{Wait: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	seen := map[string]int{}
	kinds := []struct{ kind, prefix string }{
		{"in progress", "$JS.ACK.ORDERLY_ORDERS.host_h1."},
		{"lease", "$KV.orderly_hosts.lease.h1"},
		{"pull", "$JS.API.CONSUMER.MSG.NEXT.ORDERLY_ORDERS.host_h1"},
	}
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		for _, k := range kinds {
			if strings.HasPrefix(m.Subject, k.prefix) && (k.kind != "in progress" || string(m.Data) == "+WPI") {
				mu.Lock()
				seen[k.kind]++
				mu.Unlock()
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sent := func() (msgs int64) {
		var z struct {
			Connections []struct {
				Name   string `json:"name"`
				InMsgs int64  `json:"in_msgs"`
			} `json:"connections"`
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz", s.nats.httpPort))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&z); err != nil {
			t.Fatal(err)
		}
		for _, cn := range z.Connections {
			if cn.Name == "orderly-worker-h1" {
				msgs += cn.InMsgs
			}
		}
		return msgs
	}
	const window = 30 * time.Second
	measure := func() (counts map[string]int, total int64) {
		mu.Lock()
		clear(seen)
		mu.Unlock()
		a := sent()
		pause(ctx, window)
		total = sent() - a
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(seen), total
	}
	idle, idleTotal := measure()
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "h1", Command: "sleep", Args: []string{"45"}, TimeoutSeconds: 120}, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the order to start", func() bool {
		o, err := c.Get(ctx, sub.Order.ID.String())
		return err == nil && o.Status == client.StatusRunning
	})
	pause(ctx, 2*time.Second) // past the start's own messages
	running, runningTotal := measure()
	t.Logf("in %s: idle %v (%d messages from the worker), while an order ran %v (%d)", window, idle, idleTotal, running, runningTotal)
	if n := running["in progress"]; n < 2 || n > 4 {
		t.Errorf("%d InProgress in %s of a running order, want 3 (one per 10 s)", n, window)
	}
	if n := idle["in progress"]; n != 0 {
		t.Errorf("%d InProgress in %s idle", n, window)
	}
	for _, k := range []string{"lease", "pull"} {
		if d := running[k] - idle[k]; d < -1 || d > 1 || idle[k] < 5 || idle[k] > 7 {
			t.Errorf("%s: %d idle, %d while an order ran, in %s; want 6 each (one per 5 s)", k, idle[k], running[k], window)
		}
	}
}
