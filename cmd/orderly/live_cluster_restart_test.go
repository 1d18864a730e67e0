package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedTellsAStreamMadeAgainByAWholeClusterRestart: a 3-node NATS
// cluster killed whole and started again keeps ORDERLY_LIVE's assignment
// on disk, and makes the memory stream again from it, empty, with the
// lost stream's creation time. A live feed that told a stream made again
// by its creation time alone took it for the stream it read, made its
// consumer again after the last sequence it had handed over, on a stream
// whose sequences start again at 1, and skipped what the new stream held
// below that sequence, without a word of the hole: the order's chunk,
// below it (the stream behind the feed's sequence), or past it and
// handed over without LiveLost (the stream past it, the message at the
// feed's sequence another order's).
//
// The feed is read only after the new stream holds the chunk, so that
// its restart sees the stream as each case wants it.
func TestLiveFeedTellsAStreamMadeAgainByAWholeClusterRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		others int // other orders' chunks stored after the restart, before the order's
	}{
		{"the new stream behind the feed", 0},
		{"the new stream past the feed", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startNATSClusterAccounts(t, t.TempDir(), 3, []string{"h1"})
			ctx := testenv.Context(t)
			api := c.jetStream(c.url(), "cluster-live-api")
			c.openQueue(api.Conn(), queue.Options{Replicas: 3}) // the API: the streams at three replicas
			nc, err := queue.Connect(c.url(), "cluster-live-feed", c.apiOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			q, err := queue.Bind(ctx, nc, queue.Options{}) // another API replica's: makes no stream
			if err != nil {
				t.Fatal(err)
			}
			// The chunks come from h1's worker, through its account's
			// imports, which every node has again after the restart.
			js := testenv.JetStream(t, c.url(), "cluster-live-test", seedOptions(t, c.creds.Workers["h1"], queue.WorkerInbox("h1"))...)
			id := uuid.New()
			for range 6 { // another order's, before: the feed's sequence is 7
				storeChunk(t, js, uuid.New(), "x")
			}
			storeChunk(t, js, id, "before")
			old, err := api.Stream(ctx, queue.LiveStream)
			if err != nil {
				t.Fatal(err)
			}
			// Made as the API makes it, each JetStream request bounded
			// (c.retry): on a fresh cluster one can be answered by no
			// server, and held the feed's start for the test's two
			// minutes (a CI, 2026-12-07). The feed keeps no context.
			var feed *queue.LiveFeed
			c.retry("queue.Live", func(actx context.Context) error {
				feed, err = q.Live(actx, "h1", id, 0)
				return err
			})
			defer feed.Stop()
			next := func(what string) *nats.Msg {
				t.Helper()
				nctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				m, err := feed.Next(nctx)
				if err != nil {
					t.Fatalf("no %s in a minute: %v", what, err)
				}
				return m
			}
			if m := next("the order's chunk"); m == queue.LiveLost || string(m.Data) != "before" {
				t.Fatalf("the feed handed over %q, want %q", m.Data, "before")
			}

			for _, name := range c.names {
				c.node(name).kill9()
			}
			c.start(c.names...)
			// The premise: the same creation time, an empty stream.
			var now *jetstream.StreamInfo
			testenv.WaitUntil(t, time.Minute, "the live stream answers after the restart", func() bool {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				st, err := api.Stream(sctx, queue.LiveStream)
				if err == nil {
					now = st.CachedInfo()
				}
				return err == nil
			})
			if !now.Created.Equal(old.CachedInfo().Created) || now.State.LastSeq != 0 {
				t.Fatalf("after the whole cluster's restart the live stream was created at %s with last sequence %d; want the lost one's time (%s), empty",
					now.Created, now.State.LastSeq, old.CachedInfo().Created)
			}
			t.Logf("made again empty with the lost stream's creation time %s", now.Created)
			for range tc.others {
				storeChunk(t, js, uuid.New(), "y")
			}
			storeChunk(t, js, id, "after")

			if m := next("LiveLost"); m != queue.LiveLost {
				t.Fatalf("after the restart the feed handed over %q, want LiveLost", m.Data)
			}
			if m := next("the chunk stored after the restart"); m == queue.LiveLost || string(m.Data) != "after" {
				t.Errorf("then %q, want the chunk stored after the restart", m.Data)
			}
		})
	}
}

// storeChunk stores one stdout chunk of order id of h1 in the live
// stream, trying again while the cluster elects its leaders.
func storeChunk(t *testing.T, js jetstream.JetStream, id uuid.UUID, data string) {
	t.Helper()
	m := nats.NewMsg(queue.OutputSubjectOf("h1", id))
	m.Header.Set(queue.StreamHeader, "stdout")
	m.Header.Set(queue.OffsetHeader, "0")
	m.Data = []byte(data)
	testenv.WaitUntil(t, time.Minute, "a chunk stored", func() bool {
		ctx, cancel := context.WithTimeout(testenv.Context(t), 2*time.Second)
		defer cancel()
		_, err := js.PublishMsg(ctx, m)
		return err == nil
	})
}
