package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// publishRuns publishes, on the live output of order id of host, the
// chunks of two runs of it as a thawed worker leaves them: the first
// run's first line reached the stream, its worker froze with its next
// two in the reconnect buffer, the order ran again (a new run, from
// offset 0), and the thawed worker flushed the first run's two lines
// among the next run's; then the order's end.
func publishRuns(t *testing.T, e *apiEnv, host string, id uuid.UUID) {
	t.Helper()
	ctx := testenv.Context(t)
	for _, c := range []struct {
		run    string
		offset int
		data   string
	}{
		{"FIRSTRUN", 0, "one 1\n"},
		{"NEXTRUN", 0, "two 1\n"},
		{"NEXTRUN", 6, "two 2\n"},
		{"FIRSTRUN", 6, "one 2\n"}, // the thawed worker's
		{"FIRSTRUN", 12, "one 3\n"},
		{"NEXTRUN", 12, "two 3\n"},
	} {
		m := nats.NewMsg(queue.OutputSubjectOf(host, id))
		m.Header.Set(queue.StreamHeader, "stdout")
		m.Header.Set(queue.OffsetHeader, strconv.Itoa(c.offset))
		m.Header.Set(nats.MsgIdHdr, c.run+".stdout."+strconv.Itoa(c.offset)+".0")
		m.Data = []byte(c.data)
		if _, err := e.q.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.q.PublishEvent(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: host}); err != nil {
		t.Fatal(err)
	}
}

// TestEventsSkipALateChunkOfAnEarlierRun: the SSE stream (what `orderly
// logs -f` and the web UI follow) passes on no chunk of a run seen
// before the newest, as the stored partial output skips it
// (queue.LiveRuns). Before, it passed every chunk on, and the first
// run's late lines showed among the next run's until the order ended:
// a follower placing by offset wrote "one 3" where "two 3" belongs.
func TestEventsSkipALateChunkOfAnEarlierRun(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	// No worker serves the host: the chunks and the end are the test's.
	o := e.submit("alice", map[string]any{"host": "idle-1", "command": "echo"}, "", http.StatusAccepted)
	publishRuns(t, e, "idle-1", o.ID)
	code, evs := e.events("alice", o.ID, func(event, _ string) bool { return event == "finished" })
	if code != http.StatusOK {
		t.Fatalf("events: %d %v", code, evs)
	}
	var got []string
	for _, ev := range evs {
		name, data, _ := strings.Cut(ev, " ")
		if name != "stdout" {
			continue
		}
		var c api.Chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatal(err)
		}
		got = append(got, c.Data)
	}
	if want := []string{"one 1\n", "two 1\n", "two 2\n", "two 3\n"}; strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("stdout chunks %q; want %q, the first run's late ones skipped", got, want)
	}
}

// TestFollowOrderSkipsALateChunkOfAnEarlierRun: stage0's execute stream
// (FollowOrder) gives no chunk of a run seen before the newest. Before,
// the first run's late "one 3", past what it had given, was given, and
// the next run's "two 3" at its offset dropped as its repeat.
func TestFollowOrderSkipsALateChunkOfAnEarlierRun(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	srv := api.New(api.Deps{Store: e.store, Queue: e.q, Logger: e.logger()})
	ctx := testenv.Context(t)
	sub := e.submit("alice", map[string]any{"host": "idle-1", "command": "echo"}, "", http.StatusAccepted)
	o, err := e.store.GetOrder(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	publishRuns(t, e, o.Host, o.ID)
	var out bytes.Buffer
	if _, err := srv.FollowOrder(ctx, o, func(stream string, p []byte) {
		if stream == "stdout" {
			out.Write(p)
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The follower came before the next run and places by offset: the
	// next run's first line is a repeat of the first run's to it.
	if got := out.String(); strings.Contains(got, "one 2") || strings.Contains(got, "one 3") || !strings.HasSuffix(got, "two 2\ntwo 3\n") {
		t.Fatalf("FollowOrder gave %q; want the next run's lines after the first's first, no late one of the first", got)
	}
}
