package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFollowerPastTheLiveStreamsCapIsToldWhenToComeBack: a follower
// refused because the live stream is at its cap on consumers (one per
// follower: an account's max_consumers, or nats-server's default on a
// stream that could not take its own cap) is answered 503 unavailable
// with details.reason live_followers_cap and a Retry-After, not a bare
// "live events unavailable" that said neither why nor when; once a
// follower goes, the next is served.
func TestFollowerPastTheLiveStreamsCapIsToldWhenToComeBack(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	// No worker serves the host: the order stays queued.
	o := e.submit("alice", map[string]any{"host": "idle-1", "command": "echo"}, "", http.StatusAccepted)
	ctx := testenv.Context(t)
	js := testenv.JetStream(t, e.natsURL, "live-cap")
	st, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	// The live stream full: one consumer of the test's, and a cap of as
	// many as it then has.
	if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "taken", AckPolicy: jetstream.AckNonePolicy}); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxConsumers = info.State.Consumers
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	path := "/v1/orders/" + o.ID.String() + "/events"
	code, hdr, body := e.doHeader("alice", http.MethodGet, path, nil)
	var eb api.ErrorBody
	if code != http.StatusServiceUnavailable || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "unavailable" ||
		eb.Error.Details["reason"] != "live_followers_cap" || hdr.Get("Retry-After") != "5" {
		t.Fatalf("a follower past the live stream's cap: %d, Retry-After %q, %s; want 503 unavailable, reason live_followers_cap, Retry-After 5",
			code, hdr.Get("Retry-After"), body)
	}

	if err := js.DeleteConsumer(ctx, queue.LiveStream, "taken"); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp := openEvents(t, fctx, e, "alice", path, "")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a follower once there is room: %d, want 200", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != "event: queued" {
	}
	if sc.Text() != "event: queued" {
		t.Fatalf("the stream once there is room ended before its queued event: %v", sc.Err())
	}
}
