package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/client"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// liveCount is how many messages ORDERLY_LIVE holds on the output subject
// of order id of host.
func (e *apiEnv) liveCount(host string, id uuid.UUID) uint64 {
	e.t.Helper()
	ctx := testenv.Context(e.t)
	st, err := e.q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		e.t.Fatal(err)
	}
	subj := queue.OutputSubjectOf(host, id)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// lastLive is the last message of subject in ORDERLY_LIVE.
func (e *apiEnv) lastLive(subject string) *jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := testenv.Context(e.t)
	st, err := e.q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// waitFreed waits until the API's intake has freed the order's live
// output (queue.FreeLive, once its finished event came and PostgreSQL
// holds it ended): no chunk left. The order may still be running (a
// thousand forks of sleep on a loaded machine), so the wait is long.
func (e *apiEnv) waitFreed(host string, id uuid.UUID) {
	e.t.Helper()
	testenv.WaitUntil(e.t, time.Minute, fmt.Sprintf("order %s's live output freed", id), func() bool {
		return e.liveCount(host, id) == 0
	})
}

// seqOutput is what `seq 1 n` writes.
func seqOutput(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}

// TestFinishedOrderLiveOutputFreed: once a real worker has stored an
// order's result and published its finished event, the API's intake
// frees its live output chunks and its started event from ORDERLY_LIVE
// (the finished event is left, to expire), while a running order's
// chunks stay, a finished event forged for it notwithstanding (PostgreSQL
// holds it running). The finished order's event stream is queued,
// finished with the complete stored output, and the Go client's Follow
// writes that output once; a resume after the end gets finished and
// writes nothing.
func TestFinishedOrderLiveOutputFreed(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"roll-1", "roll-2"}})
	ctx := testenv.Context(t)

	running := e.submit("alice", map[string]any{"host": "roll-2", "command": "sh",
		"args": []string{"-c", "echo before; exec sleep 60"}}, "", http.StatusAccepted)
	testenv.WaitUntil(t, 10*time.Second, "the running order's chunk in ORDERLY_LIVE", func() bool {
		return e.liveCount("roll-2", running.ID) == 1
	})

	// As the server's answer that a worker's seed can land on another
	// host's event subject (docs/security.md) would be.
	if err := e.q.PublishEvent(queue.Event{OrderID: running.ID, Type: "finished", Status: "succeeded", Host: "roll-2"}); err != nil {
		t.Fatal(err)
	}

	const lines = 60000 // 339 KiB
	want := seqOutput(lines)
	done := e.submit("alice", map[string]any{"host": "roll-1", "command": "seq", "args": []string{"1", fmt.Sprint(lines)}},
		"?wait=20", http.StatusOK)
	if done.Status != order.StatusSucceeded {
		t.Fatalf("order %s is %s", done.ID, done.Status)
	}
	e.waitFreed("roll-1", done.ID)
	if m := e.lastLive(queue.EventSubjectOf("roll-1", done.ID)); !strings.Contains(string(m.Data), `"type":"finished"`) {
		t.Fatalf("the finished order's event left is %s, want its finished event", m.Data)
	}
	// The forged event came before the finished order's, to the same
	// subscription: it was judged, and left the running order alone.
	if n := e.liveCount("roll-2", running.ID); n != 1 {
		t.Fatalf("the running order has %d messages in ORDERLY_LIVE, want its one chunk", n)
	}
	if m := e.lastLive(queue.OutputSubjectOf("roll-2", running.ID)); string(m.Data) != "before\n" || m.Header.Get(queue.StreamHeader) != "stdout" {
		t.Fatalf("the running order's chunk is %q (%q)", m.Data, m.Header.Get(queue.StreamHeader))
	}

	// The event stream of the finished order: its started event was
	// freed, and the output comes with finished.
	code, evs := e.events("alice", done.ID, func(event, _ string) bool { return event == "finished" })
	var names []string
	for _, ev := range evs {
		name, _, _ := strings.Cut(ev, " ")
		names = append(names, name)
	}
	if code != http.StatusOK || strings.Join(names, ",") != "queued,finished" {
		t.Fatalf("events of the finished order: %d %v", code, names)
	}
	var fin api.Order
	if err := json.Unmarshal([]byte(strings.TrimPrefix(evs[len(evs)-1], "finished ")), &fin); err != nil {
		t.Fatal(err)
	}
	if fin.Result == nil || fin.Result.Stdout.Content != want || fin.Result.Stdout.Truncated {
		t.Fatalf("finished event: result %+v, want the complete stdout (%d bytes)", fin.Result != nil, len(want))
	}

	// The Go client writes the stored output once; resuming after the
	// end (the finished event's id) gets finished and writes nothing.
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	o, err := c.Follow(ctx, done.ID.String(), client.FollowOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil || o.Status != client.StatusSucceeded || stdout.String() != want || stderr.Len() != 0 {
		t.Fatalf("Follow of the finished order: %v, %d bytes of stdout (want %d), stderr %q", err, stdout.Len(), len(want), stderr.String())
	}
	stdout.Reset()
	last := fmt.Sprint(e.lastLive(queue.EventSubjectOf("roll-1", done.ID)).Sequence)
	o, err = c.Follow(ctx, done.ID.String(), client.FollowOptions{Stdout: &stdout, LastEventID: last})
	if err != nil || o.Status != client.StatusSucceeded || stdout.Len() != 0 {
		t.Fatalf("Follow resumed after the end: %v, %d bytes of stdout", err, stdout.Len())
	}

	// The running order, once killed and stored, is freed too.
	if code, b := e.do("alice", "POST", "/v1/orders/"+running.ID.String()+"/cancel", nil); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, b)
	}
	e.waitFreed("roll-2", running.ID)
}

// TestQuietOrdersNeedNoPurge: an order that prints nothing, run by a
// real worker, leaves in ORDERLY_LIVE its started event, with a TTL past
// its timeout (queue.StartedTTL), and its finished event, which says it
// is alone there (queue.Event.Alone): the API's intake asks PostgreSQL
// nothing about it and sends no purge request. Each such purge was a
// JetStream API request and its answer per order, about 80 allocations
// of serve's and 4 % of its CPU at sequential sync orders
// (docs/benchmarks.md, the thirty-first round). An order that prints is
// freed as before; one that prints nothing but may run again
// (idempotent: its next run's started event must stay as long as the
// earlier run's chunks) is purged as before too.
func TestQuietOrdersNeedNoPurge(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"quiet-1"}})
	nc, err := nats.Connect(e.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var purges atomic.Int32
	sub, err := nc.Subscribe("$JS.API.STREAM.PURGE."+queue.LiveStream, func(*nats.Msg) { purges.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const quiet = 10
	var ids []uuid.UUID
	for range quiet {
		o := e.submit("alice", map[string]any{"host": "quiet-1", "command": "true", "timeout_seconds": 30}, "?wait=20", http.StatusOK)
		if o.Status != order.StatusSucceeded {
			t.Fatalf("order %s is %s", o.ID, o.Status)
		}
		ids = append(ids, o.ID)
	}
	again := e.submit("alice", map[string]any{"host": "quiet-1", "command": "true", "idempotent": true}, "?wait=20", http.StatusOK)
	// Purged after the quiet orders' finished events were handled: the
	// intake takes them in order.
	loud := e.submit("alice", map[string]any{"host": "quiet-1", "command": "echo", "args": []string{"loud"}}, "?wait=20", http.StatusOK)
	if again.Status != order.StatusSucceeded || loud.Status != order.StatusSucceeded {
		t.Fatalf("the idempotent order is %s, the printing one %s", again.Status, loud.Status)
	}
	e.waitFreed("quiet-1", loud.ID)
	testenv.WaitUntil(t, 30*time.Second, "the idempotent order's started event purged", func() bool {
		return strings.Contains(string(e.lastLive(queue.EventSubjectOf("quiet-1", again.ID)).Data), `"type":"finished"`) &&
			e.liveEvents("quiet-1", again.ID) == 1
	})
	if n := purges.Load(); n != 2 {
		t.Errorf("%d purge requests for %d quiet orders, an idempotent one and one that printed; want 2", n, quiet)
	}
	for _, id := range ids {
		if n := e.liveEvents("quiet-1", id); n != 2 {
			t.Errorf("order %s has %d events in ORDERLY_LIVE, want its started and finished ones", id, n)
		}
		fin := e.lastLive(queue.EventSubjectOf("quiet-1", id))
		if !strings.Contains(string(fin.Data), `"type":"finished"`) || !strings.Contains(string(fin.Data), `"alone":true`) {
			t.Errorf("order %s's last event is %s, want its finished one, alone", id, fin.Data)
		}
	}
	first := e.firstLive(queue.EventSubjectOf("quiet-1", ids[0]))
	if !strings.Contains(string(first.Data), `"type":"started"`) || first.Header.Get(jetstream.MsgTTLHeader) != (90*time.Second).String() {
		t.Errorf("the quiet order's first event: %s, TTL %q; want started, with a TTL of its timeout and a minute (%s)",
			first.Data, first.Header.Get(jetstream.MsgTTLHeader), 90*time.Second)
	}
}

// liveEvents is how many messages ORDERLY_LIVE holds on the events
// subject of order id of host.
func (e *apiEnv) liveEvents(host string, id uuid.UUID) uint64 {
	e.t.Helper()
	ctx := testenv.Context(e.t)
	st, err := e.q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		e.t.Fatal(err)
	}
	subj := queue.EventSubjectOf(host, id)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// firstLive is the first message of subject in ORDERLY_LIVE.
func (e *apiEnv) firstLive(subject string) *jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := testenv.Context(e.t)
	st, err := e.q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// TestFollowWhileRunningWritesOutputOnce: a follower attached while the
// order runs gets its whole output exactly once, although the chunks leave
// the live stream as soon as the result is stored.
func TestFollowWhileRunningWritesOutputOnce(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"roll-1"}})
	ctx := testenv.Context(t)
	o := e.submit("alice", map[string]any{"host": "roll-1", "command": "sh",
		"args": []string{"-c", "seq 1 30000; seq 1 5000 >&2; sleep 0.5; seq 30001 60000"}}, "", http.StatusAccepted)
	c, err := client.New(e.url, e.tokens["alice"])
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	fin, err := c.Follow(ctx, o.ID.String(), client.FollowOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil || fin.Status != client.StatusSucceeded {
		t.Fatalf("Follow: %v", err)
	}
	if want := seqOutput(60000); stdout.String() != want {
		t.Fatalf("stdout: %d bytes, want %d", stdout.Len(), len(want))
	}
	if want := seqOutput(5000); stderr.String() != want {
		t.Fatalf("stderr: %d bytes, want %d", stderr.Len(), len(want))
	}
	e.waitFreed("roll-1", o.ID)
}

// TestFollowOrderLaggingGetsStoredRest: a stage0 follower (FollowOrder)
// that lags behind while the API frees the order's chunks gets the
// rest of the output from the stored result, exactly once.
//
// The follower's push consumer stops sending once 2 MiB are unanswered
// (nats-server's first flow-control window, JsFlowControlMaxPending/16)
// and, answered once, 4 MiB: of a 6.9 MB output read in chunks of at most
// 32 KiB, a follower that takes the first chunk and waits for the freeing
// holds at most 65 chunks (2.1 MB), answers the first window only, and
// is sent about 5 MiB, so the freeing takes the rest from the live stream
// before the follower sees it (5,251,072 bytes came live in a run with
// the stored rest left out). The order printed a thousand lines a fork
// of `sleep` apart before: 16 to 47 s on a loaded machine, and past the
// wait's minute once.
func TestFollowOrderLaggingGetsStoredRest(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"roll-1"}})
	srv := api.New(api.Deps{Store: e.store, Queue: e.q, Logger: e.logger()})
	const lines = 1000000 // 6.9 MB, below the 10 MiB cap: kept whole
	sub := e.submit("alice", map[string]any{"host": "roll-1", "command": "seq",
		"args": []string{"1", fmt.Sprint(lines)}}, "", http.StatusAccepted)
	o, err := e.store.GetOrder(testenv.Context(t), sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	largest := 0 // a live chunk is one read of at most 32 KiB
	final, err := srv.FollowOrder(testenv.Context(t), o, func(stream string, p []byte) {
		if out.Len() == 0 {
			// Lag: the order ends and its chunks leave the live stream.
			e.waitFreed("roll-1", o.ID)
		}
		if stream == "stdout" {
			out.Write(p)
			largest = max(largest, len(p))
		}
	})
	if err != nil || final.Status != order.StatusSucceeded {
		t.Fatalf("FollowOrder: %v", err)
	}
	if want := seqOutput(lines); out.String() != want {
		t.Fatalf("FollowOrder gave %d bytes of stdout, want %d", out.Len(), len(want))
	}
	if largest <= 32<<10 {
		t.Fatalf("the whole output came live (largest piece %d bytes): the follower did not lag past the freeing", largest)
	}
}

// TestFollowOrderAfterTheEndGetsTheKeptHead: a stage0 follower that
// begins after a run ended, its output past the cap and its chunks freed
// up (a run that finished before the request's follow was set up, as on a
// loaded machine), still gets the output's kept head, as the live stream
// would have begun; it got no line at all before.
func TestFollowOrderAfterTheEndGetsTheKeptHead(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"roll-1"}, maxOutput: 2000})
	srv := api.New(api.Deps{Store: e.store, Queue: e.q, Logger: e.logger()})
	sub := e.submit("alice", map[string]any{"host": "roll-1", "command": "seq", "args": []string{"1", "3000"}},
		"?wait=60", http.StatusOK)
	e.waitFreed("roll-1", sub.ID)
	o, err := e.store.GetOrder(testenv.Context(t), sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Result.Stdout.Truncated {
		t.Fatalf("stdout of %d bytes kept whole: the test needs it past the cap", o.Result.Stdout.Bytes)
	}
	var out bytes.Buffer
	if _, err := srv.FollowOrder(testenv.Context(t), o, func(stream string, p []byte) {
		if stream == "stdout" {
			out.Write(p)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if all := seqOutput(3000); out.Len() < 500 || !strings.HasPrefix(all, out.String()) {
		t.Fatalf("FollowOrder gave %d bytes of stdout %q, want a head of the output", out.Len(), out.String())
	}
}
