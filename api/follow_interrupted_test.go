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

// TestFollowSaysLiveOutputWasInterrupted: a follow (the CLI's) of an
// order that goes on printing while nats-server restarts, losing the live
// output's memory stream, is told so (OnInterrupted, with the bytes it
// had written) while the order still runs, and ends with the whole
// output, byte for byte, from the stored copy. Live output cannot go on
// past the chunks the restart lost without a hole in what was written, so
// the follow writes nothing more live; before, nothing said so, and a
// long deploy's follower looked frozen until the order ended.
//
// No other API starts: the API's own live feed makes ORDERLY_LIVE again
// when, after three silent heartbeats, it finds the stream gone (the
// order prints for 40 s, past that). Before, the stream stayed gone
// until an API process started, and no chunk came live again.
func TestFollowSaysLiveOutputWasInterrupted(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	gates := t.TempDir()
	gate, end := filepath.Join(gates, "go-on"), filepath.Join(gates, "end")
	script := "seq 1 5; while [ ! -e " + gate + " ]; do sleep 0.05; done; " +
		"for i in $(seq 6 400); do echo $i; sleep 0.1; done; while [ ! -e " + end + " ]; do sleep 0.05; done"
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "args": []string{"-c", script}}, "", http.StatusAccepted)
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	stdout := &signalBuffer{want: "1\n2\n3\n4\n5\n", reached: make(chan struct{})}
	type interruption struct {
		stream  string
		written int64
	}
	told := make(chan interruption, 4)
	type result struct {
		o   *client.Order
		err error
	}
	res := make(chan result, 1)
	go func() {
		fin, err := c.Follow(testenv.Context(t), o.ID.String(), client.FollowOptions{Stdout: stdout,
			OnInterrupted: func(stream string, written int64) { told <- interruption{stream, written} }})
		res <- result{fin, err}
	}()
	select {
	case <-stdout.reached:
	case r := <-res:
		t.Fatalf("the follow ended before the first five lines: %v", r.err)
	}
	testenv.NATSServerRestarted(t, ns)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The API's stream says its live stream was lost (the interrupted
	// event): both streams are told, stderr with nothing written.
	for _, want := range []interruption{{"stdout", 10}, {"stderr", 0}} {
		select {
		case got := <-told:
			if got != want {
				t.Errorf("told %+v, want %+v", got, want)
			}
		case <-time.After(2 * time.Minute):
			t.Errorf("the follow was not told its live %s was interrupted while the order ran", want.stream)
		}
	}
	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.o.Status != client.StatusSucceeded {
		t.Fatalf("Follow: %+v, %v; want the order succeeded", r.o, r.err)
	}
	if want := seqOutput(400); stdout.String() != want {
		t.Errorf("stdout: %d bytes, want the output's %d", len(stdout.String()), len(want))
	}
	if len(told) != 0 {
		t.Errorf("told again: %+v", <-told)
	}
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

// TestFollowIsToldOfALostLiveStreamWithoutAChunk: an order that prints,
// then prints nothing more while nats-server restarts (its memory
// stream, the live output, lost), has no later chunk whose offset would
// show a gap. The API's stream says so itself once its live feed finds
// the stream made again: an "interrupted" event (id 0, where the new
// stream's ids start), on which the CLI's follow is told for both
// streams while the order still runs, and still ends with the whole
// output from the stored copy. Before, nothing was said until the order
// ended.
func TestFollowIsToldOfALostLiveStreamWithoutAChunk(t *testing.T) {
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
	req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodGet, e.url+"/v1/orders/"+o.ID.String()+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
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
	for _, want := range []string{"stdout after 10", "stderr after 0"} {
		select {
		case got := <-told:
			if got != want {
				t.Errorf("told %q, want %q", got, want)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("the follow was not told (%s) while the order ran", want)
		}
	}
	select {
	case ev, ok := <-wire:
		want := "id: 0\nevent: interrupted\ndata: {\"message\":\"" + "live output was interrupted (the message bus lost its live stream): " +
			"output may be missing from this stream; the order's stored output has it when the order ends\",\"order_id\":\"" + o.ID.String() + "\"}\n"
		if !ok || ev != want {
			t.Errorf("on the wire: %q, want %q", ev, want)
		}
	case <-time.After(30 * time.Second):
		t.Error("the stream sent no interrupted event")
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
		t.Errorf("told again: %s", <-told)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/orders/"+id+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
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
