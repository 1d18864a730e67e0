package natsembed

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestWorkerRollsUpOnlyItsHostsOutput: with the embedded server's
// permissions, a worker may roll up the live output of its own host's
// order (queue.EndOutput after the result is stored), and not another
// host's.
func TestWorkerRollsUpOnlyItsHostsOutput(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := startBus(t)
	api := b.connect(t, b.creds.API, queue.APIInbox)
	qAPI, err := queue.New(ctx, api.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st, err := qAPI.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	count := func(subj string) uint64 {
		t.Helper()
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subj]
	}
	waitCount := func(subj string, want uint64) {
		t.Helper()
		for count(subj) != want {
			select {
			case <-ctx.Done():
				t.Fatalf("%s holds %d messages, want %d", subj, count(subj), want)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	w1 := b.connect(t, b.creds.Workers["h1"], queue.WorkerInbox("h1"))
	q1, err := queue.Bind(ctx, w1.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w2 := b.connect(t, b.creds.Workers["h2"], queue.WorkerInbox("h2"))
	q2, err := queue.Bind(ctx, w2.nc, queue.Options{LeaseTTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mine, other := uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{mine, other} {
		for range 3 {
			if err := q1.PublishOutput("h1", id, "stdout", 0, []byte("chunk\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	w1.clean(t)
	waitCount(queue.OutputSubjectOf("h1", mine), 3)
	waitCount(queue.OutputSubjectOf("h1", other), 3)

	// Another host's worker cannot drop h1's output.
	if err := q2.EndOutput("h1", other); err != nil {
		t.Fatal(err)
	}
	w2.refused(t, "Publish", queue.OutputSubjectOf("h1", other))

	// h1's worker rolls up its own order: only the marker is left.
	if err := q1.EndOutput("h1", mine); err != nil {
		t.Fatal(err)
	}
	w1.clean(t)
	waitCount(queue.OutputSubjectOf("h1", mine), 1)
	if n := count(queue.OutputSubjectOf("h1", other)); n != 3 {
		t.Fatalf("the other order has %d chunks left, want 3", n)
	}
}
