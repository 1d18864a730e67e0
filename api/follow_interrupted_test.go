package api_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api/client"
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
	select {
	case got := <-told:
		if got != (interruption{"stdout", 10}) {
			t.Errorf("told %+v, want stdout interrupted after its 10 bytes", got)
		}
	case <-time.After(2 * time.Minute):
		t.Error("the follow was not told its live output was interrupted while the order ran")
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
