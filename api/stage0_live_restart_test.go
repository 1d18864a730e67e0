package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStage0ExecuteSendsEveryLineLiveAcrossANATSRestart: a stage0
// execute whose run goes on printing across a nats-server restart (the
// live output's memory stream lost) sends every line of the run live,
// once and in order, while the run still goes on, when the live stream
// it reads holds a hole that the worker's chunks published again fill
// afterwards (queue.LiveOutput).
//
// The hole is made as a NATS restart makes it when connections come back
// in another order than they left: the stage0 API's connection is cut
// (its reconnect held) while the run prints "mid" lines, which only the
// old stream gets; the server restarts; the API comes back first, makes
// the stream again and reads it from its start; the worker's connection
// (held too) comes back last and flushes the lines it printed meanwhile,
// which stand past the lost "mid" lines until the worker, seeing its
// reconnect, publishes every kept chunk again from offset 0. The follow
// (Server.FollowOrder) gave nothing live after such a hole, although the
// chunks published again filled it: the stream stopped at "before 5"
// until the run ended and the stored copy gave the rest.
func TestStage0ExecuteSendsEveryLineLiveAcrossANATSRestart(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	workerHold, followerHold := newReconnectHold(), newReconnectHold()
	defer workerHold.release()
	defer followerHold.release()
	// Named: both run an intake, and the worker's (held on purpose) logs
	// its requests timing out while the stage0 API's work.
	w := newAPIEnv(t, envOptions{name: "worker", natsURL: ns.ClientURL(), hosts: []string{"h1"}, natsOpts: []nats.Option{workerHold.option()}})
	f := newAPIEnv(t, envOptions{name: "stage0", dsn: w.dsn, natsURL: ns.ClientURL(), tokens: w.tokens, natsOpts: []nats.Option{followerHold.option()}})

	files := t.TempDir()
	at := func(name string) string { return filepath.Join(files, name) }
	script := "for i in $(seq 1 5); do echo \"before $i\"; done\n" +
		"while [ ! -e " + at("g1") + " ]; do sleep 0.05; done\n" +
		"for i in $(seq 1 20); do echo \"mid $i\"; sleep 0.02; done; : > " + at("mid") + "\n" +
		"while [ ! -e " + at("g2") + " ]; do sleep 0.05; done\n" +
		"echo \"after 1\"; : > " + at("after") + "\n" +
		"for i in $(seq 2 100); do sleep 0.05; echo \"after $i\"; done\n" +
		"while [ ! -e " + at("end") + " ]; do sleep 0.05; done"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Long.md"), []byte(stage0Runbook("Long", "{}", "", script)), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.WriteFile(at("end"), nil, 0o644) }()
	touch := func(name string) {
		t.Helper()
		if err := os.WriteFile(at(name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var want strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&want, "before %d\n", i)
	}
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&want, "mid %d\n", i)
	}
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&want, "after %d\n", i)
	}

	url, token := startStage0(t, f, dir)
	resp := executeStage0(t, url, token, "Long.md")
	defer resp.Body.Close()
	st := readStage0Stream(resp.Body)
	testenv.WaitUntil(t, time.Minute, "the run's first five lines", func() bool { return st.stdout() == "before 1\nbefore 2\nbefore 3\nbefore 4\nbefore 5\n" })
	var id uuid.UUID
	if err := w.pool.QueryRow(testenv.Context(t), `SELECT id FROM orders WHERE source = 'stage0'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// A reader of the API's own event stream, to know that the restart
	// did leave a hole in the live stream (the test proves nothing
	// otherwise).
	ready, hole := holeOnTheWire(t, f, id.String())
	select {
	case <-ready:
	case <-time.After(time.Minute):
		t.Fatal("the event stream sent none of the first lines")
	}

	// The stage0 API away; the "mid" lines reach the old stream only.
	cid, err := f.q.Conn().GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	touch("g1")
	js := testenv.JetStream(t, ns.ClientURL(), "stage0-restart-probe")
	testenv.WaitUntilAnswered(t, time.Minute, "the mid lines in the live stream", func(ctx context.Context) bool {
		if _, err := os.Stat(at("mid")); err != nil {
			return false
		}
		s, err := js.Stream(ctx, queue.LiveStream)
		if err != nil {
			return false
		}
		m, err := s.GetLastMsgForSubject(ctx, queue.OutputSubjectOf("h1", id))
		return err == nil && strings.HasSuffix(string(m.Data), "mid 20\n")
	})

	// Restarted, the worker's connection held; the API comes back, makes
	// the stream again and reads it (its feed and the reader's).
	ns = testenv.NATSServerRestarted(t, ns)
	followerHold.release()
	feedsReading(t, js, "h1", id, 2)
	// The run prints again while the worker is away: its chunks wait in
	// its connection's reconnect buffer. It comes back within the 2 s a
	// chunk's acknowledgement is waited for (queue.LiveOutput's probe),
	// past which it would publish its chunks again before that buffer
	// was flushed: a bounded pause, not a wait for an event.
	touch("g2")
	testenv.WaitUntil(t, time.Minute, "the first line after the restart", func() bool { _, err := os.Stat(at("after")); return err == nil })
	time.Sleep(500 * time.Millisecond)
	workerHold.release()
	select {
	case <-hole:
	case <-time.After(time.Minute):
		t.Fatal("no chunk came past a hole: the restart did not leave one")
	}

	// Every line, live: the run still goes on (it waits for end, or its
	// runbook's timeout, a minute, after which the stored copy gives the
	// rest).
	running := func() bool {
		o, err := w.store.GetOrder(testenv.Context(t), id)
		if err != nil {
			t.Fatal(err)
		}
		return !o.Status.Terminal()
	}
	live := "" // what the stream had sent while the run was seen running
	for got := st.stdout(); got != want.String(); got = st.stdout() {
		if !strings.HasPrefix(want.String(), got) {
			t.Fatalf("the stream sent %d bytes, not a start of the run's %d: ...%q", len(got), want.Len(), got[max(0, len(got)-60):])
		}
		if !running() {
			break
		}
		live = got
		time.Sleep(100 * time.Millisecond)
	}
	if !running() {
		t.Fatalf("the run ended (its runbook's timeout) before its output was sent live: %d bytes of its %d came while it ran: ...%q",
			len(live), want.Len(), live[max(0, len(live)-60):])
	}
	touch("end")
	done := st.wait()
	if done.ReturnCode != 0 || done.Stdout != want.String() || done.Stderr != "" {
		t.Errorf("done: rc %d, stdout %d bytes %q, stderr %q; want 0, the %d bytes, no stderr",
			done.ReturnCode, len(done.Stdout), ends(done.Stdout), done.Stderr, want.Len())
	}
	if st.stdout() != want.String() {
		t.Errorf("the stdout events hold %d bytes %q, want the %d bytes", len(st.stdout()), ends(st.stdout()), want.Len())
	}
}

// reconnectHold holds a NATS connection's reconnects until release: a
// connection that comes back after the others.
type reconnectHold struct {
	back chan struct{}
	once sync.Once
}

func newReconnectHold() *reconnectHold { return &reconnectHold{back: make(chan struct{})} }

func (h *reconnectHold) option() nats.Option {
	return nats.CustomReconnectDelay(func(int) time.Duration {
		<-h.back
		return 50 * time.Millisecond
	})
}

func (h *reconnectHold) release() { h.once.Do(func() { close(h.back) }) }

// stage0Stream is a stage0 execute's event stream as it is read.
type stage0Stream struct {
	mu  sync.Mutex
	out strings.Builder
	end chan stage0Done
}

// stage0Done is the fields of stage0's done event a test reads.
type stage0Done struct {
	ReturnCode int    `json:"return_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
}

// readStage0Stream reads r's events until done or its end.
func readStage0Stream(r io.Reader) *stage0Stream {
	st := &stage0Stream{end: make(chan stage0Done, 1)}
	go func() {
		defer close(st.end)
		sc := bufio.NewScanner(r)
		var name string
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[len("data: "):])
			case line == "":
				switch text := strings.Join(data, "\n"); name {
				case "stdout":
					st.mu.Lock()
					st.out.WriteString(text)
					st.mu.Unlock()
				case "done":
					var d stage0Done
					if json.Unmarshal([]byte(text), &d) == nil {
						st.end <- d
					}
					return
				}
				name, data = "", nil
			}
		}
	}()
	return st
}

func (st *stage0Stream) stdout() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.out.String()
}

// wait returns the done event (zero when the stream ended without one).
func (st *stage0Stream) wait() stage0Done {
	select {
	case d := <-st.end:
		return d
	case <-time.After(time.Minute):
		return stage0Done{ReturnCode: -1}
	}
}

// holeOnTheWire reads order id's event stream from e as admin: ready is
// closed once its first stdout chunk came, hole once a stdout chunk came
// past what the chunks before it held (its offset past their end).
func holeOnTheWire(t *testing.T, e *apiEnv, id string) (ready, hole <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(testenv.Context(t))
	resp := openEvents(t, ctx, e, "admin", "/v1/orders/"+id+"/events", "")
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	first, seen := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		var placed int64
		stdout := false
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "event: stdout":
				stdout = true
			case stdout && strings.HasPrefix(line, "data: "):
				var c struct {
					Data   string `json:"data"`
					Offset int64  `json:"offset"`
				}
				if json.Unmarshal([]byte(line[len("data: "):]), &c) != nil {
					continue
				}
				if c.Offset > placed {
					close(seen)
					return
				}
				placed = max(placed, c.Offset+int64(len(c.Data)))
				once.Do(func() { close(first) })
			case line == "":
				stdout = false
			}
		}
	}()
	return first, seen
}

// feedsReading waits until n consumers of the live stream read order id
// of host: each feed (queue.LiveFeed) makes one, filtered on the order's
// subjects, when it reads a stream made again. The stream's consumer
// count alone would count other orders' feeds too. (A feed whose
// consumer's creation went unanswered and was asked again holds two for
// a minute: counted, the other feed may not read yet.) js's requests
// right after the restart can go unanswered (WaitUntilAnswered): each
// try is bounded.
func feedsReading(t *testing.T, js jetstream.JetStream, host string, id uuid.UUID, n int) {
	t.Helper()
	subject := queue.OutputSubjectOf(host, id)
	testenv.WaitUntilAnswered(t, time.Minute, fmt.Sprintf("%d feeds of the order reading the new live stream", n), func(ctx context.Context) bool {
		s, err := js.Stream(ctx, queue.LiveStream)
		if err != nil {
			return false
		}
		got := 0
		infos := s.ListConsumers(ctx)
		for info := range infos.Info() {
			if slices.Contains(info.Config.FilterSubjects, subject) {
				got++
			}
		}
		return infos.Err() == nil && got >= n
	})
}
