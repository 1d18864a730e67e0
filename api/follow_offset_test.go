package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFollowOrderTakesANegativeOffsetForNone: a live chunk whose offset
// is negative (no worker writes one; a host's seed can) is given to a
// stage0 follower (FollowOrder) whole, as a chunk without an offset, as
// the SSE stream and the partial output read it. FollowOrder placed it
// at that offset: of "abcdef" at -3 it gave "def", and one at -10 not at
// all, so the follower's output lost bytes the chunk carried.
func TestFollowOrderTakesANegativeOffsetForNone(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	srv := api.New(api.Deps{Store: e.store, Queue: e.q, Logger: e.logger()})
	ctx := testenv.Context(t)
	// No worker serves the host: the chunks and the end are the test's.
	sub := e.submit("alice", map[string]any{"host": "idle-1", "command": "echo"}, "", http.StatusAccepted)
	o, err := e.store.GetOrder(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		offset int64
		data   string
	}{{-3, "abcdef\n"}, {-10, "ghi\n"}} {
		if err := e.q.PublishOutput(o.Host, o.ID, "stdout", c.offset, []byte(c.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.q.PublishEvent(queue.Event{OrderID: o.ID, Type: "finished", Status: "succeeded", Host: o.Host}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := srv.FollowOrder(ctx, o, func(stream string, p []byte) {
		if stream == "stdout" {
			out.Write(p)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if want := "abcdef\nghi\n"; out.String() != want {
		t.Fatalf("FollowOrder gave %q, want %q", out.String(), want)
	}
}
