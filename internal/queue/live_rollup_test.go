package queue_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// liveInfo is ORDERLY_LIVE's state, with the message count of every
// subject.
func liveInfo(t *testing.T, q *queue.Queue) *jetstream.StreamInfo {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(queue.OutputSubject+">"))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// publishChunks publishes n chunks of size bytes for order id of host,
// alternating stdout and stderr, and returns what each stream got.
func publishChunks(t *testing.T, q *queue.Queue, host string, id uuid.UUID, n, size int) (stdout, stderr []byte) {
	t.Helper()
	for i := range n {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		stream, offset := "stdout", len(stdout)
		if i%2 == 1 {
			stream, offset = "stderr", len(stderr)
			stderr = append(stderr, p...)
		} else {
			stdout = append(stdout, p...)
		}
		if err := q.PublishOutput(host, id, stream, int64(offset), p); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	return stdout, stderr
}

// TestEndOutputDropsThatOrdersChunks: EndOutput of one order leaves only
// its header-less marker on its output subject, frees the memory of its
// chunks, and leaves another order's chunks whole (what an interrupted
// order's successor reads back).
func TestEndOutputDropsThatOrdersChunks(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	ended, kept := uuid.New(), uuid.New()
	const n, size = 20, 4 << 10
	publishChunks(t, q, "h1", ended, n, size)
	keptOut, keptErr := publishChunks(t, q, "h1", kept, n, size)
	endedSubj, keptSubj := queue.OutputSubjectOf("h1", ended), queue.OutputSubjectOf("h1", kept)
	testenv.WaitUntil(t, 10*time.Second, "the chunks in ORDERLY_LIVE", func() bool {
		s := liveInfo(t, q).State.Subjects
		return s[endedSubj] == n && s[keptSubj] == n
	})
	before := liveInfo(t, q).State.Bytes

	if err := q.EndOutput("h1", ended); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the rolled-up order down to its marker", func() bool {
		return liveInfo(t, q).State.Subjects[endedSubj] == 1
	})
	info := liveInfo(t, q)
	if got := info.State.Subjects[keptSubj]; got != n {
		t.Fatalf("the other order has %d chunks left, want %d", got, n)
	}
	if info.State.Bytes > before-n*size {
		t.Fatalf("stream bytes %d after the rollup, %d before: the chunks' %d bytes were not freed", info.State.Bytes, before, n*size)
	}
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, endedSubj)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(queue.StreamHeader) != "" || len(m.Data) != 0 {
		t.Fatalf("marker has %s %q and %d bytes, want neither", queue.StreamHeader, m.Header.Get(queue.StreamHeader), len(m.Data))
	}

	// A reader of the live output sees nothing of the marker.
	p, err := q.PartialOutput(ctx, "h1", ended, 1<<20)
	if err != nil || len(p.Stdout) != 0 || len(p.Stderr) != 0 {
		t.Fatalf("partial output of the rolled-up order: %d+%d bytes, %v", len(p.Stdout), len(p.Stderr), err)
	}
	p, err = q.PartialOutput(ctx, "h1", kept, 1<<20)
	if err != nil || !bytes.Equal(p.Stdout, keptOut) || !bytes.Equal(p.Stderr, keptErr) {
		t.Fatalf("partial output of the other order: %d+%d bytes, want %d+%d, %v", len(p.Stdout), len(p.Stderr),
			len(keptOut), len(keptErr), err)
	}
}

// TestLiveStreamUpdatedToAllowRollup: a server whose ORDERLY_LIVE was
// created before rollups were allowed gets them at the next start, and
// keeps what the stream holds; purges stay allowed.
func TestLiveStreamUpdatedToAllowRollup(t *testing.T) {
	url := testenv.NATS(t)
	ctx := testenv.Context(t)
	js := testenv.JetStream(t, url, "old")
	// The stream as releases before the rollup created it, with a chunk.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: queue.LiveStream, Subjects: []string{queue.OutputSubject + ">", queue.EventsSubject + ">"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage, Replicas: 1,
		MaxAge: time.Hour, MaxBytes: 256 << 20, Discard: jetstream.DiscardOld,
	}); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	subj := queue.OutputSubjectOf("h1", id)
	for range 2 {
		m := nats.NewMsg(subj)
		m.Header.Set(queue.StreamHeader, "stdout")
		m.Data = []byte("chunk")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	q := testenv.Queue(t, url, "new", queue.Options{})
	cfg := liveConfigOf(t, q)
	if !cfg.AllowRollup || cfg.DenyPurge {
		t.Fatalf("after the update: allow_rollup_hdrs %v, deny_purge %v", cfg.AllowRollup, cfg.DenyPurge)
	}
	if got := liveInfo(t, q).State.Subjects[subj]; got != 2 {
		t.Fatalf("the update left %d chunks, want 2", got)
	}
	if err := q.EndOutput("h1", id); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the order rolled up", func() bool {
		return liveInfo(t, q).State.Subjects[subj] == 1
	})
}

func liveConfigOf(t *testing.T, q *queue.Queue) jetstream.StreamConfig {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Config
}
