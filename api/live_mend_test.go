package api_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveStreamMadeAgainAfterANATSRestartWithNoFollower: nats-server
// restarts under a running order that nobody follows, losing the live
// output's memory stream. The workers may not make it; the API makes it
// again by itself after its reconnect (queue.Mend, from the intake's
// loops), so what the order prints after the restart is in the stream for
// a follower who comes later and for the partial output kept if the order
// is interrupted. Before, the stream stayed gone until a follower's
// request or an API's start made it, and the chunks went into no stream.
func TestLiveStreamMadeAgainAfterANATSRestartWithNoFollower(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"h1"}})
	gates := t.TempDir()
	gate, end := filepath.Join(gates, "go-on"), filepath.Join(gates, "end")
	o := e.submit("alice", map[string]any{"host": "h1", "command": "sh", "timeout_seconds": 240, "args": []string{"-c",
		"seq 1 5; while [ ! -e " + gate + " ]; do sleep 0.05; done; " +
			"for i in $(seq 6 600); do [ -e " + end + " ] && break; echo $i; sleep 0.1; done"}},
		"", http.StatusAccepted)
	defer func() { _ = os.WriteFile(end, nil, 0o644) }()

	// The test's own view, which makes no stream.
	js := testenv.JetStream(t, ns.ClientURL(), "mend-test")
	subj := queue.OutputSubjectOf("h1", o.ID)
	// lastOffset is where the order's last chunk in the live stream
	// starts, -1 while it has none (or there is no stream).
	lastOffset := func(ctx context.Context) int64 {
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
		return off
	}
	testenv.WaitUntilAnswered(t, 30*time.Second, "the order's first chunk in the live stream", func(ctx context.Context) bool { return lastOffset(ctx) >= 0 })

	testenv.NATSServerRestarted(t, ns) // the live stream lost with the server's memory
	restarted := time.Now()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// "1\n".."5\n" are the first 10 bytes: a chunk from offset 10 on was
	// printed after the restart. Nobody follows the order, and no API
	// starts.
	testenv.WaitUntilAnswered(t, 30*time.Second, "a chunk printed after the restart in the live stream", func(ctx context.Context) bool {
		return lastOffset(ctx) >= 10
	})
	t.Logf("a chunk printed after the restart is in the live stream %v after it", time.Since(restarted).Round(time.Millisecond))
}
