package natsembed

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestLiveOutputKeptAcrossAJetStreamRestartInPlace: serve's embedded
// JetStream, restarted in place once its full store has room again
// (heal), loses the live output's memory stream while every client keeps
// its connection, so no reconnect tells anyone. A worker (its own host's
// credential) publishes a numbered line every 50 ms through
// queue.LiveOutput across such a restart, nobody following; the API's
// queue, told of the restarts (FollowRestarts, as serve does), makes the
// stream again in its Mend loop, and the worker, whose acknowledged
// chunk of the second is refused (no stream), publishes what it kept
// again. A reader that comes afterwards finds every line in the live
// stream, and reading the newest round of the order's chunks
// (PartialOutput, what a successor stores) gets each line once and in
// order; the worker's credential was refused nothing. Before, the stream
// stayed gone until a follower or an API's start made it, and the
// worker's chunks of before the restart, and of until then, were lost.
// (The chunks the new stream took before the worker saw the loss stay
// before the ones published again: the stream takes no rollups, which
// dropped them, so a reader in stream order meets them first, past a
// hole that the round published again then fills.)
func TestLiveOutputKeptAcrossAJetStreamRestartInPlace(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	creds, err := EnsureCredentials(filepath.Join(t.TempDir(), "creds"), "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{Dir: t.TempDir(), Port: -1, Logger: testLogger(t), Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	b := &bus{url: s.ClientURL(), creds: creds}
	api, qAPI := b.apiQueue(t, ctx, creds.API, queue.Options{})
	qAPI.FollowRestarts(s.JetStreamRestarts)
	w1, q1 := b.workerQueue(t, ctx, "h1", queue.Options{})
	go func() { // the intake's loop
		for ctx.Err() == nil {
			_, _ = qAPI.Mend(ctx)
			time.Sleep(queue.ProbeEvery)
		}
	}()

	id := uuid.New()
	var out queue.LiveOutput
	defer out.Stop()
	var held heldOutput
	lines, stop, printed := make(chan int, 1000), make(chan struct{}), make(chan int, 1)
	go func() { // the order
		offset := 0
		for i := 1; ; i++ {
			line := strconv.Itoa(i) + "\n"
			select {
			case <-stop:
				line = "end\n"
			default:
			}
			held.write([]byte(line))
			if err := out.Publish(q1, &held, "h1", id, "stdout", int64(offset), []byte(line)); err != nil {
				t.Logf("publish line %d: %v", i, err)
			}
			offset += len(line)
			if line == "end\n" {
				printed <- i - 1
				return
			}
			lines <- i
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for i := range lines {
		if i == 10 {
			break
		}
	}
	if err := s.restartJetStream(s.ns.JetStreamConfig()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	n := <-printed

	// The reader: the API's credential, the order's whole live output,
	// once its last chunk is the end (published after those published
	// again).
	js, err := jetstream.New(api.nc)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the end of the order's output not last in the live stream in 30 s")
		}
		st, err := js.Stream(ctx, queue.LiveStream)
		if err != nil {
			continue // no stream yet
		}
		if m, err := st.GetLastMsgForSubject(ctx, queue.OutputSubjectOf("h1", id)); err == nil && string(m.Data) == "end\n" {
			break
		}
	}
	p, err := qAPI.PartialOutput(ctx, "h1", id, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := string(p.Stdout)
	if p.StdoutTruncated {
		t.Fatalf("the live output has a hole: %q", got)
	}
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	want.WriteString("end\n")
	if got != want.String() || n < 40 {
		t.Errorf("live output %q, want lines 1 to %d then end", got, n)
	}
	w1.clean(t)
}

// heldOutput is an order's stdout as the executor holds it while the
// order runs, the whole of it (below any cap): what a LiveOutput
// publishes again from.
type heldOutput struct {
	mu sync.Mutex
	b  []byte
}

func (h *heldOutput) write(p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.b = append(h.b, p...)
}

func (h *heldOutput) ReadOutput(stream string, off int64, p []byte) (int64, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if stream != "stdout" || off >= int64(len(h.b)) {
		return off, 0
	}
	return off, copy(p, h.b[off:])
}
