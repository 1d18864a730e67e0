package main

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveRollupOnNATSCluster: on a 3-node NATS cluster, an ORDERLY_LIVE
// created at three replicas before rollups were allowed is updated to
// allow them when orderly starts, keeps its messages, and a worker's
// rollup then leaves only the marker of the order's output.
func TestLiveRollupOnNATSCluster(t *testing.T) {
	c := startNATSCluster(t, t.TempDir(), 3)
	ctx := testenv.Context(t)
	js := testenv.JetStream(t, c.url(), "rollup-test")
	nc := js.Conn()
	// The stream as releases before the rollup created it, with chunks.
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: queue.LiveStream, Subjects: []string{queue.OutputSubject + ">", queue.EventsSubject + ">"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage, Replicas: 3,
		MaxAge: time.Hour, MaxBytes: 256 << 20, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	subj := queue.OutputSubjectOf("h1", id)
	for range 3 {
		m := nats.NewMsg(subj)
		m.Header.Set(queue.StreamHeader, "stdout")
		m.Data = []byte("chunk\n")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	count := func() uint64 {
		t.Helper()
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subj]
	}

	q, err := queue.New(ctx, nc, queue.Options{Replicas: 3})
	if err != nil {
		t.Fatalf("start on the cluster with the old live stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.AllowRollup || info.Config.DenyPurge || info.Config.Replicas != 3 {
		t.Fatalf("live stream after the update: allow_rollup_hdrs %v, deny_purge %v, replicas %d",
			info.Config.AllowRollup, info.Config.DenyPurge, info.Config.Replicas)
	}
	if n := count(); n != 3 {
		t.Fatalf("the update left %d chunks, want 3", n)
	}
	if err := q.EndOutput("h1", id); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, 10*time.Second, "the order's output rolled up", func() bool { return count() == 1 })
}
