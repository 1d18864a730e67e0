package queue_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedsHoldNoQueueEach: a live feed (one per SSE follower,
// stage0 execute and UI run page) costs its process tens of KiB, not a
// message queue allocated whole: its subscription was nats.go's
// SubscribeSync, whose channel of 65,536 messages took 512 KiB each, so
// an API with 1,100 followers held 550 MiB (serve's soft limit is 48
// MiB). The heap is measured with the test's nats-server in the same
// process, so it counts the server's consumers too. The feeds still hand
// over what comes, and a feed whose connection closes ends with that
// error, not after its three heartbeats of silence.
func TestLiveFeedsHoldNoQueueEach(t *testing.T) {
	q, nc := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	const n = 100
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	feeds := make([]*queue.LiveFeed, n)
	for i := range feeds {
		f, err := q.Live(ctx, "h1", id, 0)
		if err != nil {
			t.Fatal(err)
		}
		feeds[i] = f
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
	if per > 128<<10 {
		t.Errorf("%d live feeds take %d KiB of heap each, want at most 128 KiB", n, per>>10)
	}
	t.Logf("%d live feeds: %d KiB of heap each, the server's consumers included", n, per>>10)

	stdout, _ := publishChunks(t, q, "h1", id, 1, 5)
	for i, f := range feeds {
		m, err := f.Next(ctx)
		if err != nil || string(m.Data) != string(stdout) {
			t.Fatalf("feed %d: %v %v, want the chunk %q", i, m, err, stdout)
		}
	}

	ended := make(chan error, 1)
	go func() {
		// Longer than three heartbeats: a feed that took the closed
		// connection for silence would try to make its consumer again
		// until this ends.
		nctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, err := feeds[0].Next(nctx)
		ended <- err
	}()
	nc.Close()
	if err := <-ended; !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("a feed whose connection closed ended with %v, want %v", err, nats.ErrConnectionClosed)
	}
	for _, f := range feeds {
		f.Stop()
	}
}
