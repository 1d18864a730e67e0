package queue_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveOutputProbeIsNotSentAgainIntoAStreamMadeAgain: a LiveOutput's
// probe (its chunk published with a reply) meets no live stream: the
// stream was lost and not yet made again. Its "no responders" is the
// loss told; the chunk goes to the stream again with the round that
// publishes every chunk from offset 0 once the stream is back. Before,
// the asynchronous publish sent the probe again by itself 250 and 500 ms
// later (jetstream's default retries), and the copy that found the
// stream made again landed there as a chunk of the round before: after
// a restart (the worker's round begun on its reconnect) among or after
// the new round's chunks, which a follower read twice
// (api's TestLiveOutputKeptAcrossANATSRestart, "read 1 chunks again").
func TestLiveOutputProbeIsNotSentAgainIntoAStreamMadeAgain(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	q := testenv.Queue(t, ns.ClientURL(), "liveout-probe-test", queue.Options{})
	ctx := testenv.Context(t)
	id := uuid.New()
	held := &heldStreams{}
	var out queue.LiveOutput
	defer out.Stop()
	first, second := []byte("line 1\n"), []byte("line 2\n")
	held.write("stdout", first)
	if err := out.Publish(q, held, "h1", id, "stdout", 0, first); err != nil {
		t.Fatal(err)
	}
	liveStored(t, ctx, q, 1)
	js := q.JetStream()
	if err := js.DeleteStream(ctx, queue.LiveStream); err != nil {
		t.Fatal(err)
	}
	// The first probe's answer taken and a second's time come: the next
	// chunk is a probe.
	time.Sleep(1500 * time.Millisecond)
	held.write("stdout", second)
	if err := out.Publish(q, held, "h1", id, "stdout", int64(len(first)), second); err != nil {
		t.Fatal(err)
	}
	// Made again between jetstream's first and second retry.
	time.Sleep(350 * time.Millisecond)
	if _, err := queue.New(ctx, q.Conn(), queue.Options{}); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	subj := queue.OutputSubjectOf("h1", id)
	testenv.WaitUntil(t, time.Minute, "the output published again", func() bool {
		m, err := st.GetLastMsgForSubject(ctx, subj)
		return err == nil && strings.HasSuffix(m.Header.Get(nats.MsgIdHdr), ".1")
	})
	time.Sleep(time.Second) // past any retry of the probe

	cons, err := js.OrderedConsumer(ctx, queue.LiveStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range info.NumPending {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Headers().Get(queue.OffsetHeader)+" "+m.Headers().Get(nats.MsgIdHdr)[strings.LastIndexByte(m.Headers().Get(nats.MsgIdHdr), '.')+1:])
	}
	// One round published again: both lines in one chunk from offset 0.
	if strings.Join(got, ",") != "0 1" {
		t.Errorf("the stream made again holds chunks (offset round) %q, want only \"0 1\": the probe's chunk of round 0 was sent again into it", got)
	}
}
