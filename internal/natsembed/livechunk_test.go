package natsembed

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestLiveStreamHoldsTenMiBInLittleMore: a running order's 10 MiB of
// output, published as the worker publishes it (queue.LiveOutput, one
// chunk per read of queue.LiveChunkMax), holds at most 11 MiB of serve's
// heap in the embedded server's live stream until the order ends, and no
// more than that of anything else. The stream keeps each chunk's
// headers and data in one allocation: chunks of a whole 32 KiB took 40
// KiB each (past Go's largest size class, rounded up to 8 KiB pages),
// 12.5 MiB held for 10, at the moment serve's memory is highest, when the
// executor's capture holds the same 10 MiB for the result.
func TestLiveStreamHoldsTenMiBInLittleMore(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
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
	api, _ := b.apiQueue(t, ctx, creds.API, queue.Options{})
	w1, q1 := b.workerQueue(t, ctx, "h1", queue.Options{})
	js, err := jetstream.New(api.nc)
	if err != nil {
		t.Fatal(err)
	}
	live, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() uint64 {
		info, err := live.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	// One order's first chunk, before the count starts: what a first
	// chunk allocates once (the order's state, the subject's entry).
	const total = 10 << 20
	id := uuid.New()
	var out queue.LiveOutput
	defer out.Stop()
	chunk := make([]byte, queue.LiveChunkMax) // one read buffer, reused as the executor's
	for i := range chunk {
		chunk[i] = 'y'
	}
	publish := func(offset int) int {
		n := min(len(chunk), total-offset)
		if err := out.Publish(q1, nothingHeld{}, "h1", id, "stdout", int64(offset), chunk[:n]); err != nil {
			t.Fatalf("publish at %d: %v", offset, err)
		}
		return offset + n
	}
	offset := publish(0)
	wantStored := func(n uint64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); stored() < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the live stream holds %d chunks after 30 s, want %d", stored(), n)
			}
		}
	}
	wantStored(1)
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before, chunks := heap(), uint64(1)
	for offset < total {
		offset = publish(offset)
		chunks++
	}
	wantStored(chunks)
	held := int64(heap()) - int64(before)
	t.Logf("%.2f MiB in %d chunks of %d bytes: %.2f MiB more heap", float64(total-len(chunk))/(1<<20), chunks-1, len(chunk), float64(held)/(1<<20))
	if limit := int64(total) * 110 / 100; held > limit {
		t.Errorf("the live stream's chunks held %.2f MiB of heap for %.2f MiB of output, more than %.2f",
			float64(held)/(1<<20), float64(total-len(chunk))/(1<<20), float64(limit)/(1<<20))
	}
	w1.clean(t)
}

// nothingHeld is a LiveSource that holds nothing: no NATS restart here
// makes a LiveOutput publish anything again, and a source holding the
// output would count in the heap measured.
type nothingHeld struct{}

func (nothingHeld) ReadOutput(_ string, off int64, _ []byte) (int64, int) { return off, 0 }
