package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveOutputKeptAcrossANATSRestart: an order prints a numbered line
// every 50 ms while nats-server restarts, losing the live output's memory
// stream with every chunk in it; the worker's chunks of the second or so
// before an API makes the stream again (queue.Mend) went into no
// stream. The worker keeps the running order's chunks and, after its
// reconnect, publishes them again once the stream acknowledges them
// (queue.LiveOutput): a follower who comes after the restart reads every
// line from the live stream, exactly once and in order, each chunk where
// the last one ended; one who followed across is told the stream was
// interrupted (it was lost), and then finds every line again by offset,
// with no hole. Before, the follower who came later found a hole at the
// start (the chunks of before the restart) and another at the restart.
func TestLiveOutputKeptAcrossANATSRestart(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	gates := t.TempDir()
	stop, end := filepath.Join(gates, "stop"), filepath.Join(gates, "end")
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"i=1; while [ ! -e " + stop + " ]; do echo $i; i=$((i+1)); sleep 0.05; done; echo end; " +
			"while [ ! -e " + end + " ]; do sleep 0.05; done"}},
		"", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()

	across := followLive(t, e, o.ID)
	testenv.WaitUntil(t, 30*time.Second, "ten lines followed", func() bool { return across.lines() >= 10 })
	testenv.NATSServerRestarted(t, ns) // the live stream lost with the server's memory
	restarted := time.Now()
	// Lines printed across and after the restart, and the stream made
	// again meanwhile: three seconds, and forty lines in all (check's
	// least), which a loaded machine's `sleep 0.05` took longer than
	// three seconds to print (37 lines in a CI run beside the helpers).
	time.Sleep(3 * time.Second)
	testenv.WaitUntil(t, time.Minute, "forty lines followed", func() bool {
		select {
		case <-across.done: // a hole or an error: check says which
			return true
		default:
			return across.lines() >= 40
		}
	})
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	across.wait(t)
	after := followLive(t, e, o.ID)
	after.wait(t)
	t.Logf("every line followed %v after the restart", time.Since(restarted).Round(time.Millisecond))

	for _, f := range []*liveFollower{across, after} {
		f.check(t)
	}
	if !strings.Contains(after.events(), "stdout") || strings.Contains(after.events(), "interrupted") {
		t.Errorf("the follower after the restart had events %s, want chunks and no interruption", after.events())
	}
	if !strings.Contains(across.events(), "interrupted") {
		t.Errorf("the follower across the restart had events %s, want the interruption said (the stream was lost)", across.events())
	}
	if after.repeats != 0 {
		t.Errorf("the follower after the restart read %d chunks again: the live stream holds a chunk more than once", after.repeats)
	}
	if t.Failed() {
		logLiveChunks(t, ns.ClientURL(), "h1", o.ID)
	}
}

// liveFollower reads an order's SSE stream, placing its stdout chunks by
// offset (a repeat dropped) until "end\n" is written or a hole shows.
type liveFollower struct {
	done    chan struct{}
	mu      sync.Mutex
	out     strings.Builder
	holes   []string
	repeats int
	seen    []string // event names, in order, one per kind in a row
	err     error
}

func followLive(t *testing.T, e *apiEnv, id uuid.UUID) *liveFollower {
	t.Helper()
	f := &liveFollower{done: make(chan struct{})}
	resp := openEvents(t, testenv.Context(t), e, "alice", "/v1/orders/"+id.String()+"/events", "")
	t.Cleanup(func() { _ = resp.Body.Close() })
	go func() {
		defer close(f.done)
		var event, data string
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && event != "":
				if f.event(event, data) {
					return
				}
				event, data = "", ""
			}
		}
		f.mu.Lock()
		f.err = fmt.Errorf("the stream ended before \"end\": %v", sc.Err())
		f.mu.Unlock()
	}()
	return f
}

// event takes one event; true once "end\n" is written.
func (f *liveFollower) event(event, data string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.seen); n == 0 || f.seen[n-1] != event {
		f.seen = append(f.seen, event)
	}
	if event != "stdout" {
		return false
	}
	var c api.Chunk
	if err := json.Unmarshal([]byte(data), &c); err != nil || c.Encode != nil || c.Offset == nil {
		f.err = fmt.Errorf("chunk %s: not text with an offset (%v)", data, err)
		return true
	}
	written := int64(f.out.Len())
	switch {
	case *c.Offset > written:
		f.holes = append(f.holes, fmt.Sprintf("%d bytes before offset %d", *c.Offset-written, *c.Offset))
		return true // nothing more is placed after a hole
	case *c.Offset+int64(len(c.Data)) <= written:
		f.repeats++
		return false
	}
	f.out.WriteString(c.Data[written-*c.Offset:])
	return strings.HasSuffix(f.out.String(), "\nend\n")
}

func (f *liveFollower) lines() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Count(f.out.String(), "\n")
}

func (f *liveFollower) events() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.seen, ",")
}

func (f *liveFollower) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(time.Minute):
		f.mu.Lock()
		defer f.mu.Unlock()
		t.Fatalf("no \"end\" followed in a minute: %d bytes, holes %v, events %s", f.out.Len(), f.holes, strings.Join(f.seen, ","))
	}
}

// check: every line once, in order, from 1, then "end".
func (f *liveFollower) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		t.Fatal(f.err)
	}
	if len(f.holes) > 0 {
		t.Errorf("holes in the live output: %v", f.holes)
	}
	lines := strings.Split(strings.TrimSuffix(f.out.String(), "end\n"), "\n")
	lines = lines[:len(lines)-1]
	if want := seqOutput(len(lines)) + "end\n"; f.out.String() != want || len(lines) < 40 {
		t.Errorf("live output of %d lines is not 1..%d then end:\n%s", len(lines), len(lines), f.out.String())
	}
}

// logLiveChunks logs what the live stream holds of order id of host,
// each chunk's sequence, stored time, offset, size and Nats-Msg-Id (its
// run, stream, offset and round: queue.LiveOutput): a hole in what a
// follower read is then told from a chunk the stream never took (once
// under load: the first 33 bytes missing after a restart, 1 run in 3 of
// the restart tests together).
func logLiveChunks(t *testing.T, url, host string, id uuid.UUID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	js := testenv.JetStream(t, url, "live-chunks-test")
	st, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Logf("the live stream: %v", err)
		return
	}
	info := st.CachedInfo()
	t.Logf("the live stream, created %s: sequences %d - %d", info.Created, info.State.FirstSeq, info.State.LastSeq)
	subj := queue.OutputSubjectOf(host, id)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq < info.State.FirstSeq+2000; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil || m.Subject != subj {
			continue
		}
		t.Logf("seq %d at %s: offset %s, %d bytes, id %s", seq, m.Time.Format("15:04:05.000"),
			m.Header.Get(queue.OffsetHeader), len(m.Data), m.Header.Get(nats.MsgIdHdr))
	}
}
