package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// liveStored waits until ORDERLY_LIVE holds n messages and returns its
// last sequence: a core publish is stored after its flush returns, so
// the stream's last sequence read at once can be from before the last
// chunks published (once 0, for a test that resumed "after" it and read
// the stream from its start). The test's publishes go out on one
// connection in order, so the n-th stored is the last one sent.
func liveStored(t *testing.T, ctx context.Context, q *queue.Queue, n uint64) uint64 {
	t.Helper()
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	testenv.WaitUntil(t, 30*time.Second, "the published chunks stored", func() bool {
		info, err := st.Info(ctx)
		if err != nil {
			return false
		}
		last = info.State.LastSeq
		return info.State.Msgs >= n
	})
	return last
}

// restartedAndMadeAgain restarts ns (testenv.NATSServerRestarted), waits
// for q's connection to be back, and makes the streams again as an API
// starting then does (queue.New). It waits for the reconnection itself,
// not for IsConnected, which still says true while the connection has not
// yet read the old server's end. A JetStream request sent as the
// connection comes back can go unanswered (seen: create stream
// ORDERLY_ORDERS waited out a test's two minutes, twice): each try gets
// jetstream's default 5 s, as orderly's own requests do.
func restartedAndMadeAgain(t *testing.T, ctx context.Context, ns *server.Server, q *queue.Queue) *server.Server {
	t.Helper()
	nc := q.Conn()
	before := nc.Stats().Reconnects
	ns = testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, time.Minute, "the connection back after the restart", func() bool {
		return nc.Stats().Reconnects > before && nc.IsConnected()
	})
	for {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := queue.New(tctx, nc, queue.Options{})
		cancel()
		if err == nil {
			return ns
		}
		if ctx.Err() != nil {
			t.Fatalf("the streams were not made again after the restart: %v", err)
		}
		t.Logf("making the streams again after the restart: %v", err)
	}
}
