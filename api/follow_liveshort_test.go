package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFollowAtTheEndTellsLiveOutputStoppedAtTheCap: an order past the
// live output cap (worker.max_output_bytes, 4000 here) whose live stream
// a nats-server restart lost has, at its end, a stored copy that holds
// more than came live. The follow (the CLI's) is told why: the cap
// (client.LiveCapped, the worker marking the chunk that reached it),
// not a loss: every byte up to the cap came live, and again after the
// restart. Before, it was told "interrupted after 4000 bytes (the
// message bus lost some)", which the cap alone never says.
func TestFollowAtTheEndTellsLiveOutputStoppedAtTheCap(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}, maxOutput: 4000})
	end := filepath.Join(t.TempDir(), "end")
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"seq 1 1200; while [ ! -e " + end + " ]; do sleep 0.05; done"}}, "", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()
	live := seqOutput(1200)[:4000]
	r := followTellingWhy(t, e, o.ID.String(), live)
	select {
	case <-r.stdout.reached:
	case err := <-r.err:
		t.Fatalf("the follow ended before the live output's %d bytes: %v", len(live), err)
	}
	testenv.NATSServerRestarted(t, ns)
	r.interruptedSeen(t)
	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-r.err; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if got, want := r.told(), []string{"stdout short after 4000: capped"}; !slices.Equal(got, want) {
		t.Errorf("told %q, want %q", got, want)
	}
}

// TestFollowAtTheEndTellsLiveOutputLost: an order whose live stream a
// nats-server restart lost, and which printed more and ended while its
// worker's connection was still away (its reconnect held), so that
// nothing it printed came again live: the follow is told, at the order's
// end, that the message bus lost the rest (client.LiveLost), and writes
// it from the stored copy. Before, it was told OnInterrupted, as for a
// hole in the middle of a run, whose message says the rest is written
// when it comes again.
func TestFollowAtTheEndTellsLiveOutputLost(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	hold := newReconnectHold()
	defer hold.release()
	w := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}, natsOpts: []nats.Option{hold.option()}})
	e := newAPIEnv(t, envOptions{dsn: w.dsn, natsURL: ns.ClientURL(), tokens: w.tokens})
	gate := filepath.Join(t.TempDir(), "gate")
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"seq 1 5; while [ ! -e " + gate + " ]; do sleep 0.05; done; seq 6 10"}}, "", http.StatusAccepted)
	defer func() { _ = os.WriteFile(gate, nil, 0o644) }()
	r := followTellingWhy(t, e, o.ID.String(), seqOutput(5))
	select {
	case <-r.stdout.reached:
	case err := <-r.err:
		t.Fatalf("the follow ended before the first five lines: %v", err)
	}
	testenv.NATSServerRestarted(t, ns)
	r.interruptedSeen(t)
	// The order ends while its worker is away: its result reaches
	// PostgreSQL, none of its later chunks the live stream.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-r.err; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if got, want := r.told(), []string{"stdout short after 10: lost"}; !slices.Equal(got, want) {
		t.Errorf("told %q, want %q", got, want)
	}
	if got := r.stdout.String(); got != seqOutput(10) {
		t.Errorf("stdout: %q, want %q", got, seqOutput(10))
	}
}

// whyFollow is a follow of an order that records what it was told of
// its live output (OnInterrupted, OnLiveShort).
type whyFollow struct {
	stdout *signalBuffer
	err    chan error
	events chan string
	wire   *eventWatch // its own event stream
}

// interruptedSeen waits until the follow's own event stream carried
// "interrupted": the restart lost the live stream (the test proves
// nothing otherwise), and the follow reads that event before any that
// the order's end brings.
func (r *whyFollow) interruptedSeen(t *testing.T) {
	t.Helper()
	select {
	case <-r.wire.seen:
	case <-time.After(2 * time.Minute):
		t.Fatal("the follow's event stream sent no interrupted event: the restart lost nothing")
	}
}

// eventWatch is an HTTP transport that closes seen once the body of an
// order's event stream it carries has held the event name.
type eventWatch struct {
	name string
	seen chan struct{}
	once sync.Once
}

func (w *eventWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/events") {
		resp.Body = &watchedBody{ReadCloser: resp.Body, w: w}
	}
	return resp, err
}

// watchedBody is a response body read through an eventWatch.
type watchedBody struct {
	io.ReadCloser
	w    *eventWatch
	tail []byte // the last bytes read, for an event line cut between reads
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.tail = append(b.tail, p[:n]...)
	if bytes.Contains(b.tail, []byte("\nevent: "+b.w.name+"\n")) {
		b.w.once.Do(func() { close(b.w.seen) })
	}
	if len(b.tail) > 64 {
		b.tail = b.tail[len(b.tail)-64:]
	}
	return n, err
}

// followTellingWhy follows order id as alice on e; its stdout's reached
// is closed once it holds first.
func followTellingWhy(t *testing.T, e *apiEnv, id, first string) *whyFollow {
	t.Helper()
	wire := &eventWatch{name: "interrupted", seen: make(chan struct{})}
	c, err := client.New(e.url, e.tokens["alice"], client.WithHTTPClient(&http.Client{Transport: wire}))
	if err != nil {
		t.Fatal(err)
	}
	r := &whyFollow{stdout: &signalBuffer{want: first, reached: make(chan struct{})}, err: make(chan error, 1),
		events: make(chan string, 8), wire: wire}
	go func() {
		fin, err := c.Follow(testenv.Context(t), id, client.FollowOptions{Stdout: r.stdout,
			OnInterrupted: func(stream string, written int64) {
				r.events <- fmt.Sprintf("%s interrupted after %d", stream, written)
			},
			OnLiveShort: func(stream string, written int64, why client.LiveShort) {
				r.events <- fmt.Sprintf("%s short after %d: %s", stream, written, map[client.LiveShort]string{client.LiveLost: "lost", client.LiveCapped: "capped"}[why])
			}})
		if err == nil && fin.Status != client.StatusSucceeded {
			err = fmt.Errorf("the order ended %s", fin.Status)
		}
		r.err <- err
	}()
	return r
}

// told is what the follow was told, in order.
func (r *whyFollow) told() []string {
	var out []string
	for {
		select {
		case s := <-r.events:
			out = append(out, s)
		default:
			return out
		}
	}
}
