package queue_test

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// heldStreams is an order's output as the executor holds it while the
// order runs: each stream whole, but stderr past its cut, whose bytes
// from hole[0] to hole[1] its capture no longer holds (a ring that
// turned past them).
type heldStreams struct {
	mu             sync.Mutex
	stdout, stderr []byte
	hole           [2]int64
}

func (h *heldStreams) write(stream string, p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if stream == "stdout" {
		h.stdout = append(h.stdout, p...)
	} else {
		h.stderr = append(h.stderr, p...)
	}
}

func (h *heldStreams) ReadOutput(stream string, off int64, p []byte) (int64, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, end := h.stdout, int64(len(h.stdout))
	if stream == "stderr" {
		b, end = h.stderr, int64(len(h.stderr))
		if off >= h.hole[0] && off < h.hole[1] {
			off = h.hole[1]
		} else if off < h.hole[0] {
			end = h.hole[0]
		}
	}
	if off >= end {
		return off, 0
	}
	return off, copy(p, b[off:end])
}

// TestLiveOutputPublishesEachStreamAgainFromItsSource: a LiveOutput has
// published an order's stdout and stderr, interleaved, when nats-server
// restarts and the live stream is lost. What it publishes again is read
// from its source, not from copies of the chunks: each stream from
// offset 0 to where its last chunk ended, in offset order, in chunks of
// their own, with stderr's bytes that the source no longer holds
// skipped (the next chunk's offset says where it goes on). Every byte
// read is the stream's at that offset, and the stream holds nothing of
// before the loss beside it (lost with its server: a memory stream).
func TestLiveOutputPublishesEachStreamAgainFromItsSource(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "liveout-source-test", queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	held := &heldStreams{hole: [2]int64{100, 300}}
	var out queue.LiveOutput
	defer out.Stop()
	var at [2]int64
	chunks := 0
	for i := range 80 {
		stream, k := "stdout", 0
		if i%2 == 1 {
			stream, k = "stderr", 1
		}
		p := fmt.Appendf(nil, "%s %04d\n", stream[3:], i) // 10 bytes
		held.write(stream, p)
		if err := out.Publish(q, held, "h1", id, stream, at[k], p); err != nil {
			t.Fatal(err)
		}
		at[k] += int64(len(p))
		chunks++
	}
	liveStored(t, ctx, q, uint64(chunks))

	restartedAndMadeAgain(t, ctx, ns, q)
	// Read once the last chunk published again is in the stream: stderr
	// is published after stdout (the order of their first chunks).
	subj := queue.OutputSubjectOf("h1", id)
	js := q.JetStream()
	testenv.WaitUntil(t, time.Minute, "the order's output published again", func() bool {
		st, err := js.Stream(ctx, queue.LiveStream)
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil || m.Header.Get(queue.StreamHeader) != "stderr" {
			return false
		}
		off, _ := strconv.ParseInt(m.Header.Get(queue.OffsetHeader), 10, 64)
		return off+int64(len(m.Data)) == at[1]
	})
	cons, err := js.OrderedConsumer(ctx, queue.LiveStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][][2]int64{} // the runs of each stream, in the order read
	bytesOf := map[string][]byte{"stdout": held.stdout, "stderr": held.stderr}
	for read := 0; ; read++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("the live stream after %d chunks: %v (runs %v)", read, err, got)
		}
		stream := m.Headers().Get(queue.StreamHeader)
		off, err := strconv.ParseInt(m.Headers().Get(queue.OffsetHeader), 10, 64)
		if err != nil || (stream != "stdout" && stream != "stderr") {
			t.Fatalf("a chunk of stream %q at %q", stream, m.Headers().Get(queue.OffsetHeader))
		}
		if end := off + int64(len(m.Data())); !bytes.Equal(m.Data(), bytesOf[stream][off:end]) {
			t.Fatalf("the %s chunk at %d is not the stream's bytes there", stream, off)
		}
		runs := got[stream]
		switch k := len(runs); {
		case k > 0 && runs[k-1][1] == off:
			runs[k-1][1] += int64(len(m.Data()))
		case k > 0 && off < runs[k-1][1]:
			t.Fatalf("a %s chunk at %d after %v: a repeat, or a chunk from before the loss", stream, off, runs)
		default:
			runs = append(runs, [2]int64{off, off + int64(len(m.Data()))})
		}
		got[stream] = runs
		if stream == "stderr" && runs[len(runs)-1][1] == at[1] {
			break
		}
	}
	want := map[string][][2]int64{"stdout": {{0, at[0]}}, "stderr": {{0, 100}, {300, at[1]}}}
	for _, s := range []string{"stdout", "stderr"} {
		if fmt.Sprint(got[s]) != fmt.Sprint(want[s]) {
			t.Errorf("%s in the live stream after the restart: bytes %v, want %v", s, got[s], want[s])
		}
	}
}
