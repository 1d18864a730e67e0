package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFreedOnNATSCluster: on a 3-node NATS cluster, an ORDERLY_LIVE
// created at three replicas when it took rollups (any worker's seed could
// purge every host's live output with one) is updated to refuse them
// when orderly starts, keeps its messages and its replicas, and refuses
// a chunk with Nats-Rollup: all; the API's purge of a finished order
// (FreeLive) then leaves only its finished event, and another order's
// chunks whole. An older API that turns rollups on again is undone by
// Mend. (It was TestLiveRollupOnNATSCluster, of the worker's rollup.)
// The cluster runs orderly's accounts: the chunks, the event and the
// rollup come from the workers' seeds, through their accounts' imports.
func TestLiveFreedOnNATSCluster(t *testing.T) {
	c := startNATSClusterAccounts(t, t.TempDir(), 3, []string{"h1", "h2"})
	ctx := testenv.Context(t)
	js := c.jetStream(c.url(), "live-free-test") // the API's
	nc := js.Conn()
	// The workers publish live output and events from their accounts,
	// as on the cluster deploy/nats runs.
	worker := func(host string) jetstream.JetStream {
		return testenv.JetStream(t, c.url(), "live-free-"+host, seedOptions(t, c.creds.Workers[host], queue.WorkerInbox(host))...)
	}
	h1, h2 := worker("h1"), worker("h2")
	// The stream as releases before 2026-12-06 created it, with chunks.
	old := jetstream.StreamConfig{
		Name: queue.LiveStream, Subjects: []string{queue.OutputSubject + ">", queue.EventsSubject + ">"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage, Replicas: 3,
		MaxAge: time.Hour, MaxBytes: 256 << 20, Discard: jetstream.DiscardOld, AllowRollup: true, AllowMsgTTL: true,
	}
	c.retry("create the old live stream", func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, old)
		return err
	})
	done, other := uuid.New(), uuid.New()
	publish := func(m *nats.Msg) {
		t.Helper()
		// Its own id: a publish tried again is not stored twice.
		m.Header.Set(nats.MsgIdHdr, uuid.NewString())
		c.retry("publish on "+m.Subject, func(ctx context.Context) error {
			_, err := h1.PublishMsg(ctx, m)
			return err
		})
	}
	for _, id := range []uuid.UUID{done, other} {
		for range 3 {
			m := nats.NewMsg(queue.OutputSubjectOf("h1", id))
			m.Header.Set(queue.StreamHeader, "stdout")
			m.Data = []byte("chunk\n")
			publish(m)
		}
	}
	st, err := js.Stream(ctx, queue.LiveStream)
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
	config := func() jetstream.StreamConfig {
		t.Helper()
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config
	}

	q := c.openQueue(nc, queue.Options{Replicas: 3})
	if cfg := config(); cfg.AllowRollup || cfg.DenyPurge || cfg.Replicas != 3 {
		t.Fatalf("live stream after the update: allow_rollup_hdrs %v, deny_purge %v, replicas %d",
			cfg.AllowRollup, cfg.DenyPurge, cfg.Replicas)
	}
	if n := count(queue.OutputSubjectOf("h1", done)); n != 3 {
		t.Fatalf("the update left %d chunks, want 3", n)
	}
	refused := func() {
		t.Helper()
		m := nats.NewMsg(queue.OutputSubjectOf("h2", uuid.New()))
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
		c.retry("publish a rollup", func(ctx context.Context) error {
			_, err := h2.PublishMsg(ctx, m)
			switch {
			case err == nil:
				t.Fatal("a chunk with Nats-Rollup: all was stored, want it refused")
			case strings.Contains(err.Error(), "rollup not permitted"):
				return nil
			}
			return err // unanswered (an election): again
		})
	}
	refused()

	// The order finishes: its finished event, then the API's purge.
	fin := nats.NewMsg(queue.EventSubjectOf("h1", done))
	fin.Header.Set(jetstream.MsgTTLHeader, "1m")
	fin.Data = []byte(`{"order_id":"` + done.String() + `","type":"finished","status":"succeeded","host":"h1"}`)
	publish(fin)
	c.retry("free the finished order", func(ctx context.Context) error { return q.FreeLive(ctx, "h1", done) })
	if n, e, o := count(queue.OutputSubjectOf("h1", done)), count(queue.EventSubjectOf("h1", done)), count(queue.OutputSubjectOf("h1", other)); n != 0 || e != 1 || o != 3 {
		t.Fatalf("after FreeLive: the finished order has %d chunks and %d events, the other %d chunks; want 0, 1, 3", n, e, o)
	}

	// An older API's start turns rollups on again; Mend turns them off.
	c.retry("update the live stream as an older API", func(ctx context.Context) error {
		_, err := js.UpdateStream(ctx, old)
		return err
	})
	c.retry("Mend", func(ctx context.Context) error {
		_, err := q.Mend(ctx)
		return err
	})
	if config().AllowRollup {
		t.Fatal("Mend left the live stream taking rollups")
	}
	refused()
	if n := count(queue.OutputSubjectOf("h1", other)); n != 3 {
		t.Fatalf("the other order has %d chunks, want 3", n)
	}
}
