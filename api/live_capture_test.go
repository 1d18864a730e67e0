package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveOutputAfterANATSRestartHasAllThreeMiBFromOffsetZero: a running
// order printed 3.4 MB, all of it in the live stream, and waits;
// nats-server restarts and the memory stream is lost with every chunk.
// The worker publishes the order's output again from the executor's
// capture, which holds all of it (below the 10 MiB cap): a follower who
// comes once that is done reads every byte from offset 0, each chunk
// where the last ended. Before, the worker published again the copy it
// kept of the last MiB only, and that follower's first chunk stood
// 2.4 MB past a hole.
func TestLiveOutputAfterANATSRestartHasAllThreeMiBFromOffsetZero(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	end := filepath.Join(t.TempDir(), "end")
	const lines = 500000
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"seq 1 " + strconv.Itoa(lines) + "; echo end; while [ ! -e " + end + " ]; do sleep 0.05; done"}},
		"", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()
	total := int64(len(seqOutput(lines)) + len("end\n"))
	if total <= 3<<20 {
		t.Fatalf("the order prints %d bytes, not more than 3 MiB", total)
	}

	liveEnd := liveEndOf(t, ns.ClientURL(), "h1", o.ID)
	testenv.WaitUntilAnswered(t, time.Minute, "the order's whole output in the live stream", func(ctx context.Context) bool { return liveEnd(ctx) == total })
	testenv.NATSServerRestarted(t, ns) // the live stream lost with the server's memory
	restarted := time.Now()
	testenv.WaitUntilAnswered(t, time.Minute, "the order's output published again", func(ctx context.Context) bool { return liveEnd(ctx) == total })
	t.Logf("%d bytes published again %v after the restart", total, time.Since(restarted).Round(time.Millisecond))

	after := followLive(t, e, o.ID)
	after.wait(t)
	after.check(t)
	if after.repeats != 0 {
		t.Errorf("the follower after the restart read %d chunks again: the live stream holds a chunk more than once", after.repeats)
	}
}

// TestLiveOutputPublishedAgainPastTheCapIsWhatTheResultKeeps: an order
// with a 3 MiB cap prints 3.75 MiB and waits. Live, its first 3 MiB were
// published (the cap bounds what goes on the bus); the executor's capture
// keeps the head (1.5 MiB) and, in its ring, the latest 1.5 MiB (from
// 2.25 MiB on), as the stored result does around its truncation marker.
// After nats-server restarts, what the worker publishes again is what
// the capture holds of what was published: the head, then from where the
// ring starts to 3 MiB, read from the ring as it turned; a follower
// after the restart has a hole exactly where the stored result has its
// marker, and the bytes on both sides are the result's. This is the
// bound of what is published again (it was the last MiB, 2 to 3 MiB,
// with the head lost).
func TestLiveOutputPublishedAgainPastTheCapIsWhatTheResultKeeps(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	end := filepath.Join(t.TempDir(), "end")
	const capped, printed = 3 << 20, 3<<20 + 3<<18
	stream := []byte(seqOutput(600000))[:printed]
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "max_output_bytes": capped,
		"args": []string{"-c", "seq 1 600000 | head -c " + strconv.Itoa(printed) + "; while [ ! -e " + end + " ]; do sleep 0.05; done"}},
		"", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()

	liveEnd := liveEndOf(t, ns.ClientURL(), "h1", o.ID)
	testenv.WaitUntilAnswered(t, time.Minute, "the order's live output up to its cap in the live stream", func(ctx context.Context) bool { return liveEnd(ctx) == capped })
	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntilAnswered(t, time.Minute, "the order's output published again", func(ctx context.Context) bool { return liveEnd(ctx) == capped })

	// The follower after the restart: every stdout chunk placed by offset,
	// until the one that ends at the cap.
	resp := openEvents(t, testenv.Context(t), e, "alice", "/v1/orders/"+o.ID.String()+"/events", "")
	defer resp.Body.Close()
	got, have := make([]byte, capped), make([]bool, capped)
	var event string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for done := false; !done && sc.Scan(); {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			event = v
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || event != "stdout" {
			continue
		}
		var c api.Chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Encode != nil || c.Offset == nil {
			t.Fatalf("chunk %.200s: not text with an offset (%v)", data, err)
		}
		at := *c.Offset
		if at+int64(len(c.Data)) > capped {
			t.Fatalf("a chunk at %d of %d bytes: past the cap %d, which was never published", at, len(c.Data), capped)
		}
		copy(got[at:], c.Data)
		for i := range len(c.Data) {
			have[at+int64(i)] = true
		}
		done = at+int64(len(c.Data)) == capped
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	// What is held, run by run.
	var runs [][2]int
	for i := 0; i < capped; {
		if !have[i] {
			i++
			continue
		}
		j := i
		for j < capped && have[j] {
			j++
		}
		runs = append(runs, [2]int{i, j})
		i = j
	}
	head, tailFrom := capped/2, printed-(capped-capped/2)
	if want := [][2]int{{0, head}, {tailFrom, capped}}; len(runs) != 2 || runs[0] != want[0] || runs[1] != want[1] {
		t.Fatalf("the follower after the restart has bytes %v of the live output, want %v: the head, then from where the capture's ring starts", runs, want)
	}
	if !bytes.Equal(got[:head], stream[:head]) || !bytes.Equal(got[tailFrom:], stream[tailFrom:capped]) {
		t.Fatal("the live output published again is not the order's output at those offsets")
	}

	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := e.waitOrder(o.ID, "succeeded").Result
	marker := order.TruncationMarker(printed - capped)
	want := string(stream[:head]) + marker + string(stream[tailFrom:])
	if res == nil || !res.Stdout.Truncated || res.Stdout.Content != want {
		t.Fatalf("stored stdout is not the head, the marker %q and the tail (the live output's hole stands where the marker is)", marker)
	}
}

// liveEndOf returns where the last chunk of order id's output in the live
// stream ends, -1 while there is none (or no stream), read with a
// connection of its own that makes no stream, under ctx (a try of
// WaitUntilAnswered: right after a restart a request can go unanswered).
func liveEndOf(t *testing.T, url, host string, id uuid.UUID) func(context.Context) int64 {
	js := testenv.JetStream(t, url, "live-end-test")
	subj := queue.OutputSubjectOf(host, id)
	return func(ctx context.Context) int64 {
		st, err := js.Stream(ctx, queue.LiveStream)
		if err != nil {
			return -1
		}
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return -1
		}
		off, err := strconv.ParseInt(m.Header.Get(queue.OffsetHeader), 10, 64)
		if err != nil {
			return -1
		}
		return off + int64(len(m.Data))
	}
}
