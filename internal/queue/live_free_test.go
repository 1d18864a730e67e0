package queue_test

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// liveInfo is ORDERLY_LIVE's state, with the message count of every
// subject.
func liveInfo(t *testing.T, q *queue.Queue) *jetstream.StreamInfo {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("orderly.>"))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// publishChunks publishes n chunks of size bytes for order id of host,
// alternating stdout and stderr, and returns what each stream got.
func publishChunks(t *testing.T, q *queue.Queue, host string, id uuid.UUID, n, size int) (stdout, stderr []byte) {
	t.Helper()
	for i := range n {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		stream, offset := "stdout", len(stdout)
		if i%2 == 1 {
			stream, offset = "stderr", len(stderr)
			stderr = append(stderr, p...)
		} else {
			stdout = append(stdout, p...)
		}
		if err := q.PublishOutput(host, id, stream, int64(offset), p); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	return stdout, stderr
}

// TestFreeLiveDropsThatOrdersMessages: FreeLive of an ended order leaves
// only its finished event (which expires by its TTL), frees the memory
// of its chunks and its started event, and leaves another order's
// messages whole (what an interrupted order's successor reads back).
func TestFreeLiveDropsThatOrdersMessages(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	ended, kept := uuid.New(), uuid.New()
	const n, size = 20, 4 << 10
	for _, id := range []uuid.UUID{ended, kept} {
		if err := q.PublishEvent(queue.Event{OrderID: id, Type: "started", Status: "running", Host: "h1"}); err != nil {
			t.Fatal(err)
		}
	}
	publishChunks(t, q, "h1", ended, n, size)
	keptOut, keptErr := publishChunks(t, q, "h1", kept, n, size)
	if err := q.PublishEvent(queue.Event{OrderID: ended, Type: "finished", Status: "succeeded", Host: "h1"}); err != nil {
		t.Fatal(err)
	}
	endedSubj, keptSubj := queue.OutputSubjectOf("h1", ended), queue.OutputSubjectOf("h1", kept)
	endedEv, keptEv := queue.EventSubjectOf("h1", ended), queue.EventSubjectOf("h1", kept)
	testenv.WaitUntil(t, 10*time.Second, "the chunks and events in ORDERLY_LIVE", func() bool {
		s := liveInfo(t, q).State.Subjects
		return s[endedSubj] == n && s[keptSubj] == n && s[endedEv] == 2 && s[keptEv] == 1
	})
	before := liveInfo(t, q).State.Bytes

	for range 2 { // idempotent: any replica may free an order, and again
		if err := q.FreeLive(ctx, "h1", ended); err != nil {
			t.Fatal(err)
		}
	}
	info := liveInfo(t, q)
	if s := info.State.Subjects; s[endedSubj] != 0 || s[endedEv] != 1 || s[keptSubj] != n || s[keptEv] != 1 {
		t.Fatalf("after FreeLive: the ended order has %d chunks and %d events, the other %d and %d; want 0, 1, %d, 1",
			s[endedSubj], s[endedEv], s[keptSubj], s[keptEv], n)
	}
	if info.State.Bytes > before-n*size {
		t.Fatalf("stream bytes %d after FreeLive, %d before: the chunks' %d bytes were not freed", info.State.Bytes, before, n*size)
	}
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, endedEv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(m.Data, []byte(`"type":"finished"`)) || m.Header.Get(jetstream.MsgTTLHeader) == "" {
		t.Fatalf("the ended order's event left is %s (%v), want the finished event with its TTL", m.Data, m.Header)
	}

	p, err := q.PartialOutput(ctx, "h1", ended, 1<<20, 0)
	if err != nil || len(p.Stdout) != 0 || len(p.Stderr) != 0 {
		t.Fatalf("partial output of the freed order: %d+%d bytes, %v", len(p.Stdout), len(p.Stderr), err)
	}
	p, err = q.PartialOutput(ctx, "h1", kept, 1<<20, 0)
	if err != nil || !bytes.Equal(p.Stdout, keptOut) || !bytes.Equal(p.Stderr, keptErr) {
		t.Fatalf("partial output of the other order: %d+%d bytes, want %d+%d, %v", len(p.Stdout), len(p.Stderr),
			len(keptOut), len(keptErr), err)
	}
}

// TestLiveLeftoversFreed: an ended order whose finished event the API
// missed is listed by LiveLeftovers and freed by FreeLeftover, with or
// without an event left; a freed order (its finished event alone) and
// an order without anything more than one event are not listed.
func TestLiveLeftoversFreed(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	withEvents, noEvents, freed, quiet := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{withEvents, freed, quiet} {
		if err := q.PublishEvent(queue.Event{OrderID: id, Type: "started", Status: "running", Host: "h1"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []uuid.UUID{withEvents, noEvents, freed} {
		publishChunks(t, q, "h1", id, 3, 100)
	}
	for _, id := range []uuid.UUID{withEvents, freed} {
		if err := q.PublishEvent(queue.Event{OrderID: id, Type: "finished", Status: "succeeded", Host: "h1"}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitUntil(t, 10*time.Second, "the messages in ORDERLY_LIVE", func() bool {
		s := liveInfo(t, q).State.Subjects
		return s[queue.OutputSubjectOf("h1", withEvents)] == 3 && s[queue.OutputSubjectOf("h1", noEvents)] == 3 &&
			s[queue.OutputSubjectOf("h1", freed)] == 3
	})
	if err := q.FreeLive(ctx, "h1", freed); err != nil {
		t.Fatal(err)
	}
	left, err := q.LiveLeftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]queue.LiveOrder{}
	for _, o := range left {
		got[o.ID] = o
	}
	want := map[uuid.UUID]queue.LiveOrder{
		withEvents: {Host: "h1", ID: withEvents, Output: 3, Events: 2},
		noEvents:   {Host: "h1", ID: noEvents, Output: 3},
	}
	if !maps.Equal(got, want) {
		t.Fatalf("leftovers %+v, want %+v", got, want)
	}
	for _, o := range left {
		if err := q.FreeLeftover(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	s := liveInfo(t, q).State.Subjects
	for _, id := range []uuid.UUID{withEvents, noEvents} {
		if n := s[queue.OutputSubjectOf("h1", id)]; n != 0 {
			t.Fatalf("order %s has %d chunks left after FreeLeftover", id, n)
		}
	}
	if n := s[queue.EventSubjectOf("h1", withEvents)]; n != 1 {
		t.Fatalf("order %s has %d events left, want its finished one", withEvents, n)
	}
	if left, err := q.LiveLeftovers(ctx); err != nil || len(left) != 0 {
		t.Fatalf("leftovers after they were freed: %+v %v", left, err)
	}
}

// TestLiveStreamUpdatedToRefuseRollups: a server whose ORDERLY_LIVE was
// created when it took rollups (any worker's seed could purge every
// host's live output with one) is updated to refuse them at the next
// start, and keeps what the stream holds; purges stay allowed. A chunk
// with Nats-Rollup: all is refused then, and purges nothing. An older API
// that turns rollups on again, at its start during a rolling upgrade, is
// undone by Mend.
func TestLiveStreamUpdatedToRefuseRollups(t *testing.T) {
	url := testenv.NATS(t)
	ctx := testenv.Context(t)
	js := testenv.JetStream(t, url, "old")
	// The stream as releases before 2026-12-06 created it, with chunks.
	old := jetstream.StreamConfig{
		Name: queue.LiveStream, Subjects: []string{queue.OutputSubject + ">", queue.EventsSubject + ">"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage, Replicas: 1,
		MaxAge: time.Hour, MaxBytes: 256 << 20, Discard: jetstream.DiscardOld, AllowRollup: true, AllowMsgTTL: true,
	}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	subj := queue.OutputSubjectOf("h1", id)
	for range 2 {
		m := nats.NewMsg(subj)
		m.Header.Set(queue.StreamHeader, "stdout")
		m.Data = []byte("chunk")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	q := testenv.Queue(t, url, "new", queue.Options{})
	cfg := liveConfigOf(t, q)
	if cfg.AllowRollup || cfg.DenyPurge || !cfg.AllowMsgTTL {
		t.Fatalf("after the update: allow_rollup_hdrs %v, deny_purge %v, allow_msg_ttl %v", cfg.AllowRollup, cfg.DenyPurge, cfg.AllowMsgTTL)
	}
	// Not the ends told to the API's freeing (queue.FreeSubjectOf).
	newSubjects := []string{queue.OutputSubject + ">", queue.EventsSubject + "*.*"}
	if !slices.Equal(cfg.Subjects, newSubjects) {
		t.Fatalf("after the update: subjects %v, want %v", cfg.Subjects, newSubjects)
	}
	if got := liveInfo(t, q).State.Subjects[subj]; got != 2 {
		t.Fatalf("the update left %d chunks, want 2", got)
	}
	refusedRollup(t, js, queue.OutputSubjectOf("h2", uuid.New()))
	if got := liveInfo(t, q).State.Subjects[subj]; got != 2 {
		t.Fatalf("the refused rollup left %d chunks, want 2", got)
	}

	// An older API's start turns them on again; Mend turns them off.
	if _, err := js.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if !liveConfigOf(t, q).AllowRollup {
		t.Fatal("the stream took no rollups again")
	}
	if n, err := q.Mend(ctx); err != nil || n != 1 {
		t.Fatalf("Mend: %d %v, want the live stream set back", n, err)
	}
	if cfg := liveConfigOf(t, q); cfg.AllowRollup || !slices.Equal(cfg.Subjects, newSubjects) {
		t.Fatalf("Mend left the live stream taking rollups (%v) or subjects %v", cfg.AllowRollup, cfg.Subjects)
	}
	refusedRollup(t, js, queue.OutputSubjectOf("h2", uuid.New()))
	if got := liveInfo(t, q).State.Subjects[subj]; got != 2 {
		t.Fatalf("after Mend and a refused rollup: %d chunks, want 2", got)
	}

	// An API of 2026-12-06, without rollups, puts orderly.events.> back
	// at its start; Mend sets the subjects back.
	cfg = liveConfigOf(t, q)
	cfg.Subjects = old.Subjects
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Mend looks once every MendEvery.
	testenv.WaitUntil(t, 3*queue.MendEvery, "Mend set the live stream's subjects back", func() bool {
		n, err := q.Mend(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	if cfg := liveConfigOf(t, q); !slices.Equal(cfg.Subjects, newSubjects) {
		t.Fatalf("Mend left the live stream's subjects %v", cfg.Subjects)
	}
}

// refusedRollup publishes a chunk with Nats-Rollup: all on subj and fails
// unless the live stream refuses it.
func refusedRollup(t *testing.T, js jetstream.JetStream, subj string) {
	t.Helper()
	m := nats.NewMsg(subj)
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	m.Header.Set(queue.StreamHeader, "stdout")
	_, err := js.PublishMsg(testenv.Context(t), m)
	if err == nil || !strings.Contains(err.Error(), "rollup not permitted") {
		t.Fatalf("a chunk with Nats-Rollup: all: %v, want it refused (rollup not permitted)", err)
	}
}

func liveConfigOf(t *testing.T, q *queue.Queue) jetstream.StreamConfig {
	t.Helper()
	ctx := testenv.Context(t)
	st, err := q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Config
}

// TestSubscribeFinishedHearsOnlyOrdersToFree: the API's freeing
// (SubscribeFinished) is sent the end of each order that leaves live
// messages to free, and nothing else: not a started event, nor the
// finished event of an order that printed nothing (Event.Alone), nor an
// output chunk. It took every event before, two deliveries per quiet
// order that it dropped (docs/benchmarks.md, the thirty-fourth round).
// The ends are not stored in the live stream, whose subjects stay each
// order's two.
func TestSubscribeFinishedHearsOnlyOrdersToFree(t *testing.T) {
	q, nc := openQueue(t, queue.Options{})
	freer := testenv.Queue(t, nc.ConnectedUrl(), "freer", queue.Options{})
	heard := make(chan uuid.UUID, 16)
	stop, err := freer.SubscribeFinished(func(host string, id uuid.UUID) {
		if host == "h1" {
			heard <- id
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := freer.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	before := freer.Conn().Stats().InMsgs

	quiet, loud, again := uuid.New(), uuid.New(), uuid.New()
	// As a worker publishes them: the quiet order's started event with
	// its TTL and its finished one alone; the loud order's chunks; an
	// order that may run again (no TTL on its started event).
	evs := []queue.Event{
		{OrderID: quiet, Type: "started", Status: "running", Host: "h1", TTL: 90 * time.Second},
		{OrderID: loud, Type: "started", Status: "running", Host: "h1", TTL: 90 * time.Second},
		{OrderID: again, Type: "started", Status: "running", Host: "h1"},
		{OrderID: quiet, Type: "finished", Status: "succeeded", Host: "h1", Alone: true},
	}
	for _, ev := range evs {
		if err := q.PublishEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	publishChunks(t, q, "h1", loud, 2, 10)
	for _, ev := range []queue.Event{
		{OrderID: loud, Type: "finished", Status: "succeeded", Host: "h1"},
		{OrderID: again, Type: "finished", Status: "succeeded", Host: "h1"},
	} {
		if err := q.PublishEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	var got []uuid.UUID
	for len(got) < 2 {
		select {
		case id := <-heard:
			got = append(got, id)
		case <-time.After(10 * time.Second):
			t.Fatalf("the freeing heard %v, want %v and %v", got, loud, again)
		}
	}
	if got[0] != loud || got[1] != again {
		t.Fatalf("the freeing heard %v, want %v then %v", got, loud, again)
	}
	// A round trip: whatever the server sent before its answer is read.
	if err := freer.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if n := freer.Conn().Stats().InMsgs - before; n != 2 {
		t.Errorf("the freeing's connection was sent %d messages for 2 orders to free among 3 orders' 6 events and 2 chunks; want 2", n)
	}
	select {
	case id := <-heard:
		t.Errorf("the freeing heard %v too", id)
	default:
	}
	for subj := range liveInfo(t, q).State.Subjects {
		if strings.HasSuffix(subj, ".free") {
			t.Errorf("the live stream stored %s", subj)
		}
	}
}
