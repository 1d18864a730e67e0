package natsembed

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestAWorkerSeedCannotEmptyTheLiveStream: with the embedded server's
// permissions, while h1's order streams its output, h2's seed publishes
// `Nats-Rollup: all` on its own output subject (a subject it may publish
// on), as a plain publish and as a JetStream one: the live stream refuses
// it, and a follower of h1's order that attaches afterwards still gets
// every chunk. When ORDERLY_LIVE took rollups (the worker rolled up its
// order's chunks once the result was stored), that message purged every
// host's live output, and the follower got only what came after it. No
// worker may purge the stream instead: the API frees finished orders.
func TestAWorkerSeedCannotEmptyTheLiveStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	q1, err := queue.Bind(ctx, w1.nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	id := uuid.New()
	subj := queue.OutputSubjectOf("h1", id)
	st, err := qAPI.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	// lastOffset is where h1's last chunk in ORDERLY_LIVE starts.
	lastOffset := func() int {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return -1
		}
		off, _ := strconv.Atoi(m.Header.Get(queue.OffsetHeader))
		return off
	}
	const chunks = 20
	var want strings.Builder
	publish := func(from, to int) {
		t.Helper()
		last := 0
		for i := from; i < to; i++ {
			p := fmt.Sprintf("line %02d\n", i)
			last = want.Len()
			if err := q1.PublishOutput("h1", id, "stdout", int64(want.Len()), []byte(p)); err != nil {
				t.Fatal(err)
			}
			want.WriteString(p)
		}
		w1.clean(t)
		for lastOffset() != last {
			select {
			case <-ctx.Done():
				t.Fatalf("h1's last chunk in ORDERLY_LIVE is at %d, want %d", lastOffset(), last)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	publish(0, chunks/2)

	// h2's seed, on its own output subject.
	own := queue.OutputSubjectOf("h2", uuid.New())
	m := nats.NewMsg(own)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	if err := w2.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	ack, err := w2.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	w2.clean(t)

	publish(chunks/2, chunks)
	f, err := qAPI.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	var got strings.Builder
	for n := 0; n < chunks; n++ {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := f.Next(rctx)
		cancel()
		if err != nil {
			t.Fatalf("the follower got %d of %d chunks (%q), then: %v", n, chunks, got.String(), err)
		}
		if off, _ := strconv.Atoi(m.Header.Get(queue.OffsetHeader)); off != got.Len() {
			t.Fatalf("chunk %d at offset %d, want %d: the chunks before were purged", n, off, got.Len())
		}
		got.Write(m.Data)
	}
	if got.String() != want.String() {
		t.Fatalf("the follower got %q, want %q", got.String(), want.String())
	}
	if !strings.Contains(string(ack.Data), "rollup not permitted") {
		t.Fatalf("h2's Nats-Rollup: all on %s was answered %s, want a refusal", own, ack.Data)
	}
}
