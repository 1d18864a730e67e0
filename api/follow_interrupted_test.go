package api_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFollowWritesEveryLineLiveAcrossANATSRestart: a follow (the
// CLI's) of an order that goes on printing while nats-server restarts,
// losing the live output's memory stream, writes every line of it once
// and in order while the order still runs, and is told of no loss
// (OnInterrupted): the API's stream says "interrupted", but the worker
// publishes the running order's chunks again from offset 0 once the
// stream is back (hA17), and the follow goes on placing them by offset,
// the repeats dropped. Before, the follow took "interrupted" as the end
// of live output: told "stdout after 10", it wrote nothing more until the
// order ended and the stored copy gave the rest.
//
// No other API starts: the API's own live feed makes ORDERLY_LIVE again
// when, after three silent heartbeats, it finds the stream gone (the
// order prints for 40 s, past that).
func TestFollowWritesEveryLineLiveAcrossANATSRestart(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	gates := t.TempDir()
	gate, end := filepath.Join(gates, "go-on"), filepath.Join(gates, "end")
	script := "seq 1 5; while [ ! -e " + gate + " ]; do sleep 0.05; done; " +
		"for i in $(seq 6 400); do echo $i; sleep 0.1; done; while [ ! -e " + end + " ]; do sleep 0.05; done"
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c", script}}, "", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	stdout := &signalBuffer{want: "1\n2\n3\n4\n5\n", reached: make(chan struct{})}
	told := make(chan string, 4)
	type result struct {
		o   *client.Order
		err error
	}
	res := make(chan result, 1)
	go func() {
		fin, err := c.Follow(testenv.Context(t), o.ID.String(), client.FollowOptions{Stdout: stdout,
			OnInterrupted: func(stream string, written int64) { told <- fmt.Sprintf("%s after %d", stream, written) }})
		res <- result{fin, err}
	}()
	// A reader of the stream itself: the restart must have lost the
	// stream ("interrupted"), or the test proves nothing.
	wire := interruptedOnTheWire(t, e, o.ID.String())
	select {
	case <-stdout.reached:
	case r := <-res:
		t.Fatalf("the follow ended before the first five lines: %v", r.err)
	}
	testenv.NATSServerRestarted(t, ns)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wire:
	case <-time.After(2 * time.Minute):
		t.Fatal("the stream sent no interrupted event: the restart lost nothing")
	}
	// Every line, live: the order still runs (it waits for end).
	want := seqOutput(400)
	for deadline := time.Now().Add(3 * time.Minute); stdout.String() != want; time.Sleep(100 * time.Millisecond) {
		if got := stdout.String(); !strings.HasPrefix(want, got) || time.Now().After(deadline) {
			t.Fatalf("while the order ran the follow wrote %d bytes, not a start of its %d (told %d times): ...%q",
				len(got), len(want), len(told), got[max(0, len(got)-40):])
		}
	}
	if o, err := e.store.GetOrder(testenv.Context(t), o.ID); err != nil || o.Status.Terminal() {
		t.Fatalf("the order ended before its output was written live: %v, %v", o, err)
	}
	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.o.Status != client.StatusSucceeded {
		t.Fatalf("Follow: %+v, %v; want the order succeeded", r.o, r.err)
	}
	if stdout.String() != want {
		t.Errorf("stdout: %d bytes, want the output's %d", len(stdout.String()), len(want))
	}
	if len(told) != 0 {
		t.Errorf("told of a loss: %s", <-told)
	}
}

// interruptedOnTheWire reads the order's event stream as alice and closes
// the channel it returns once an "interrupted" event came.
func interruptedOnTheWire(t *testing.T, e *apiEnv, id string) <-chan struct{} {
	t.Helper()
	resp := openEvents(t, testenv.Context(t), e, "alice", "/v1/orders/"+id+"/events", "")
	t.Cleanup(func() { resp.Body.Close() })
	seen := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "event: interrupted" {
				close(seen)
				return
			}
		}
	}()
	return seen
}

// signalBuffer is a buffer that closes reached once it holds want.
type signalBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	want    string
	reached chan struct{}
	once    sync.Once
}

func (s *signalBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if s.b.String() == s.want {
		s.once.Do(func() { close(s.reached) })
	}
	return len(p), nil
}

func (s *signalBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFollowAcrossALostLiveStreamWithoutAChunkTellsNoLoss: an order that
// prints, then prints nothing more while nats-server restarts (its
// memory stream, the live output, lost), has no later chunk whose offset
// would show a gap. The API's stream says the stream was lost once its
// live feed finds it made again: an "interrupted" event (id 0, where the
// new stream's ids start). The worker publishes the order's chunks again
// from offset 0 (hA17), so nothing is missing: the CLI's follow is told
// of no loss, drops the repeats and ends with the whole output, each line
// once. hF16 had the follow told for both streams at the event ("stdout
// after 10", "stderr after 0"), although nothing was lost.
func TestFollowAcrossALostLiveStreamWithoutAChunkTellsNoLoss(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	end := filepath.Join(t.TempDir(), "end")
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"seq 1 5; while [ ! -e " + end + " ]; do sleep 0.05; done; seq 6 10"}}, "", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	stdout := &signalBuffer{want: "1\n2\n3\n4\n5\n", reached: make(chan struct{})}
	told := make(chan string, 4)
	res := make(chan error, 1)
	go func() {
		fin, err := c.Follow(testenv.Context(t), o.ID.String(), client.FollowOptions{Stdout: stdout,
			OnInterrupted: func(stream string, written int64) { told <- fmt.Sprintf("%s after %d", stream, written) }})
		if err == nil && fin.Status != client.StatusSucceeded {
			err = fmt.Errorf("the order ended %s", fin.Status)
		}
		res <- err
	}()
	// A reader of the stream itself, for the event as it is on the wire.
	resp := openEvents(t, testenv.Context(t), e, "alice", "/v1/orders/"+o.ID.String()+"/events", "")
	defer resp.Body.Close()
	wire := make(chan string, 1)
	go func() {
		var ev strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				ev.WriteString(sc.Text() + "\n")
				continue
			}
			if strings.Contains(ev.String(), "event: interrupted\n") {
				wire <- ev.String()
				return
			}
			ev.Reset()
		}
		close(wire)
	}()

	select {
	case <-stdout.reached:
	case err := <-res:
		t.Fatalf("the follow ended before the first five lines: %v", err)
	}
	testenv.NATSServerRestarted(t, ns)
	select {
	case ev, ok := <-wire:
		want := "id: 0\nevent: interrupted\ndata: {\"message\":\"" + "live output was interrupted (the message bus lost its live stream): " +
			"output may be missing from this stream; the order's stored output has it when the order ends\",\"order_id\":\"" + o.ID.String() + "\"}\n"
		if !ok || ev != want {
			t.Errorf("on the wire: %q, want %q", ev, want)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the stream sent no interrupted event")
	}
	// The chunks published again (repeats) come after the event; the
	// follow must not take them for output.
	time.Sleep(3 * time.Second)
	if got := stdout.String(); got != seqOutput(5) {
		t.Errorf("stdout after the restart, before the order printed more: %q, want %q", got, seqOutput(5))
	}
	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if want := seqOutput(10); stdout.String() != want {
		t.Errorf("stdout: %q, want %q", stdout.String(), want)
	}
	if len(told) != 0 {
		t.Errorf("told of a loss: %s", <-told)
	}
}

// TestEventsResumedAcrossANATSRestartSayInterrupted: a client that
// resumes an order's event stream (Last-Event-ID) after a NATS restart
// lost the live stream, with no event stream of the API open across the
// restart, gets 200 and "interrupted" (id 0) first: the ids it had are of
// the lost stream, and what the order printed in between comes only with
// its stored output. Before, the API answered 503 ("live events
// unavailable": no feed had made ORDERLY_LIVE again, and only an API's
// start made it), and once the stream was there it read the new one from
// its start without a word of the hole.
func TestEventsResumedAcrossANATSRestartSayInterrupted(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	end := filepath.Join(t.TempDir(), "end")
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"seq 1 5; while [ ! -e " + end + " ]; do sleep 0.05; done"}}, "", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()
	status, evs := rawEvents(t, e, o.ID.String(), "", func(ev rawEvent) bool { return ev.event == "stdout" })
	if status != http.StatusOK || len(evs) == 0 || evs[len(evs)-1].event != "stdout" {
		t.Fatalf("the first stream: %d %+v, want the order's stdout", status, evs)
	}
	lastID := evs[len(evs)-1].id

	// No feed of the API is left open across the restart.
	q := testenv.Queue(t, ns.ClientURL(), "events-resume-test", queue.Options{})
	for gone := time.Now().Add(30 * time.Second); ; {
		st, err := q.JetStream().Stream(testenv.Context(t), queue.LiveStream)
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().State.Consumers == 0 {
			break
		}
		if time.Now().After(gone) {
			t.Fatal("the first stream's consumer is still there after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	testenv.NATSServerRestarted(t, ns)

	deadline := time.Now().Add(time.Minute)
	for {
		status, evs = rawEvents(t, e, o.ID.String(), lastID, func(rawEvent) bool { return true })
		if status == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the API's connection to NATS coming back
	}
	if status != http.StatusOK || len(evs) != 1 || evs[0].id != "0" || evs[0].event != "interrupted" {
		t.Fatalf("resumed after id %s across the restart: %d %+v, want 200 and interrupted (id 0) first", lastID, status, evs)
	}
}

// rawEvent is one SSE event as it came on the wire.
type rawEvent struct{ id, event, data string }

// rawEvents reads the order's event stream as alice, resumed after
// lastID when it is set, until stop returns true or the stream ends. A
// status other than 200 comes with the answer's body as one event's data.
func rawEvents(t *testing.T, e *apiEnv, id, lastID string, stop func(rawEvent) bool) (int, []rawEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), time.Minute)
	defer cancel()
	resp := openEvents(t, ctx, e, "alice", "/v1/orders/"+id+"/events", lastID)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, []rawEvent{{data: string(b)}}
	}
	var out []rawEvent
	var ev rawEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.event != "" {
				out = append(out, ev)
				if stop(ev) {
					return resp.StatusCode, out
				}
			}
			ev = rawEvent{}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[len("id: "):]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[len("data: "):]
		}
	}
	return resp.StatusCode, out
}
