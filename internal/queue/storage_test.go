package queue_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// startStoreServer runs nats-server with JetStream in dir, allowing
// maxStore bytes of file storage (what nats-server derives, unless told,
// from 75% of the disk space free when it starts), on port (-1: any).
func startStoreServer(t *testing.T, dir string, maxStore int64, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		JetStreamMaxStore: maxStore, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10e9) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// TestStreamsOnAServerShortOfStorage starts the queue where JetStream
// allows less file storage than ORDERLY_SUBMIT's 1 GiB cap reserves: on
// a disk with less than about 1.4 GB free, and on a nats-server restarted
// after its disk had filled. Before, JetStream refused the streams there
// ("insufficient storage resources available"), even an update that
// changed nothing of streams that existed and worked, so no `orderly api`
// or `serve` could start: `serve` on a 1 GiB disk exited at once, and an
// API started after nats-server came back from a full disk waited for
// NATS for good while the running one served.
func TestStreamsOnAServerShortOfStorage(t *testing.T) {
	t.Run("new", func(t *testing.T) {
		ns := startStoreServer(t, t.TempDir(), 256<<20, -1)
		q := testenv.Queue(t, ns.ClientURL(), "small-disk", queue.Options{})
		info, err := q.JetStream().Stream(testenv.Context(t), queue.SubmitStream)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.CachedInfo().Config.MaxBytes; got <= 0 || got > 256<<20 {
			t.Fatalf("%s capped at %d bytes, want a cap that fits 256 MiB", queue.SubmitStream, got)
		}
	})
	t.Run("restarted", func(t *testing.T) {
		dir := t.TempDir()
		ns := startStoreServer(t, dir, 4<<30, -1)
		port := ns.Addr().(*net.TCPAddr).Port
		testenv.Queue(t, ns.ClientURL(), "before", queue.Options{})
		ns.Shutdown()
		ns.WaitForShutdown()
		// Back with room for the streams, not for what they reserve.
		ns = startStoreServer(t, dir, 128<<20, port)
		q := testenv.Queue(t, ns.ClientURL(), "after", queue.Options{})
		ctx := testenv.Context(t)
		info, err := q.JetStream().Stream(ctx, queue.SubmitStream)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.CachedInfo().Config.MaxBytes; got != queue.SubmitMaxBytes {
			t.Fatalf("%s capped at %d bytes, want it kept as it was (%d)", queue.SubmitStream, got, queue.SubmitMaxBytes)
		}
		if _, err := q.JetStream().Publish(ctx, queue.OrdersSubject+"h1", []byte("x")); err != nil {
			t.Fatalf("publish to the kept orders stream: %v", err)
		}
	})
}

// TestSettingsRefusedForStorageAreAppliedLater: an API started while
// JetStream could not reserve its streams' storage used them as they were,
// and a changed setting (here nats.dedup_window) waited for the API's
// next start with room. ApplyDeferredSettings, which the API's intake
// runs every few minutes, brings them once nats-server has room again,
// and leaves them as they are while it has not.
func TestSettingsRefusedForStorageAreAppliedLater(t *testing.T) {
	dir := t.TempDir()
	ns := startStoreServer(t, dir, 4<<30, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	testenv.Queue(t, ns.ClientURL(), "before", queue.Options{DedupWindow: 2 * time.Minute})
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = startStoreServer(t, dir, 128<<20, port) // room for the streams, not for what they reserve
	const want = 5 * time.Minute
	q := testenv.Queue(t, ns.ClientURL(), "after", queue.Options{DedupWindow: want})
	ctx := testenv.Context(t)
	dedup := func() time.Duration {
		t.Helper()
		st, err := q.JetStream().Stream(ctx, queue.OrdersStream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.Duplicates
	}
	if got := dedup(); got == want {
		t.Fatalf("the orders stream took the new dedup window on a server short of storage: the test sets up nothing")
	}
	if n, err := q.ApplyDeferredSettings(ctx); n != 0 || err != nil {
		t.Errorf("ApplyDeferredSettings still short of storage: %d, %v; want 0, nil", n, err)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	startStoreServer(t, dir, 4<<30, port)
	testenv.WaitUntil(t, 10*time.Second, "the queue reconnects", func() bool { return q.Conn().IsConnected() })
	// A JetStream request sent right after the restart can go unanswered
	// (and waited for ctx's two minutes once in CI): wait until JetStream
	// answers before the retry the test is about.
	if err := testenv.Answered(t, "JetStream's account info", func(ctx context.Context) error {
		_, err := q.JetStream().AccountInfo(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	n, err := q.ApplyDeferredSettings(ctx)
	if err != nil || n == 0 {
		t.Fatalf("ApplyDeferredSettings with room: %d, %v", n, err)
	}
	if got := dedup(); got != want {
		t.Errorf("the orders stream's dedup window is %s after the retry, want %s", got, want)
	}
	if n, err := q.ApplyDeferredSettings(ctx); n != 0 || err != nil {
		t.Errorf("ApplyDeferredSettings with nothing deferred: %d, %v; want 0, nil", n, err)
	}
}

// TestMendLeavesHandMadeLimitsToTheDeferredSettings: with ORDERLY_SUBMIT
// given a max_age by hand, and nats-server back with room for the
// streams but not for what they reserve, Mend's update was refused like
// every other: it logged WARN "set back to orderly's" while max_age
// stayed, with the refusals' WARNs, every MendEvery. It now says that
// the limits stay until JetStream has room, counts nothing, and leaves
// them to ApplyDeferredSettings, which sets orderly's once there is
// room: for an API started short of storage (it does not try, and says
// so in one line) and for one that was not (its try is refused).
func TestMendLeavesHandMadeLimitsToTheDeferredSettings(t *testing.T) {
	for _, startedShort := range []bool{true, false} {
		name := "started short of storage"
		if !startedShort {
			name = "short of storage since"
		}
		t.Run(name, func(t *testing.T) { mendShortOfStorage(t, startedShort) })
	}
}

func mendShortOfStorage(t *testing.T, startedShort bool) {
	dir := t.TempDir()
	ns := startStoreServer(t, dir, 4<<30, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	var logs testenv.LogBuffer
	before := testenv.Queue(t, ns.ClientURL(), "before", queue.Options{Logger: testenv.LoggerTo(&logs)})
	ctx := testenv.Context(t)
	maxAge := func(q *queue.Queue) time.Duration {
		t.Helper()
		st, err := q.JetStream().Stream(ctx, queue.SubmitStream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.MaxAge
	}
	st, err := before.JetStream().Stream(ctx, queue.SubmitStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxAge = time.Hour // nats stream edit ORDERLY_SUBMIT --max-age 1h
	if _, err := before.JetStream().UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = startStoreServer(t, dir, 128<<20, port) // room for the streams, not for what they reserve
	q := before
	if startedShort {
		q = testenv.Queue(t, ns.ClientURL(), "after", queue.Options{Logger: testenv.LoggerTo(&logs)})
	} else {
		testenv.WaitUntil(t, 10*time.Second, "the queue reconnects", func() bool { return q.Conn().IsConnected() })
		if err := testenv.Answered(t, "JetStream's account info", func(ctx context.Context) error {
			_, err := q.JetStream().AccountInfo(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	started := strings.Count(logs.String(), "level=WARN")
	// Made again: the live memory stream, lost with the restart, when
	// the API was up across it. Set back: nothing.
	want := 0
	if !startedShort {
		want = 1
	}
	n, err := q.Mend(ctx)
	if err != nil || n != want {
		t.Errorf("Mend short of storage: %d, %v; want %d, nil", n, err, want)
	}
	if got := maxAge(q); got != time.Hour {
		t.Fatalf("max_age %s after Mend short of storage: the test sets up nothing", got)
	}
	l := logs.String()
	if strings.Contains(l, "set back to orderly's") {
		t.Errorf("Mend said the hand-made limit was set back while it stayed:\n%s", l)
	}
	if !strings.Contains(l, `msg="a JetStream stream's limits were changed by hand (nats stream edit?), and JetStream has no room`) ||
		!strings.Contains(l, "ORDERLY_SUBMIT: max_age 1h0m0s") {
		t.Errorf("Mend did not say the hand-made limit stays:\n%s", l)
	}
	if w := strings.Count(l, "level=WARN") - started; startedShort && w != 1 {
		t.Errorf("Mend logged %d WARN lines, want its one:\n%s", w, l)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	startStoreServer(t, dir, 4<<30, port)
	testenv.WaitUntil(t, 10*time.Second, "the queue reconnects", func() bool { return q.Conn().IsConnected() })
	if err := testenv.Answered(t, "JetStream's account info", func(ctx context.Context) error {
		_, err := q.JetStream().AccountInfo(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.ApplyDeferredSettings(ctx); err != nil {
		t.Fatal(err)
	}
	if got := maxAge(q); got != 0 {
		t.Errorf("max_age %s once JetStream has room, want orderly's (none)", got)
	}
}

// TestMendTurnsLiveRollupsOffShortOfStorage: with nats-server back with
// room for the streams but not for what they reserve (the settings
// deferred), Mend left every change it found to ApplyDeferredSettings,
// the live stream's rollups among them: an older API's start during a
// rolling upgrade turned them on (the live stream is kept in memory, so
// want of file storage refuses neither that update nor Mend's), and for
// up to DeferredEvery any worker's seed could purge every host's live
// output, with a WARN that blamed hand-made limits. Mend turns them off
// at once, short of storage or not, and keeps only the file streams'
// limits for later.
func TestMendTurnsLiveRollupsOffShortOfStorage(t *testing.T) {
	dir := t.TempDir()
	ns := startStoreServer(t, dir, 4<<30, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	testenv.Queue(t, ns.ClientURL(), "before", queue.Options{})
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = startStoreServer(t, dir, 128<<20, port) // room for the streams, not for what they reserve
	var logs testenv.LogBuffer
	q := testenv.Queue(t, ns.ClientURL(), "after", queue.Options{Logger: testenv.LoggerTo(&logs)})
	if !strings.Contains(logs.String(), "using the stream as it is") {
		t.Fatalf("the queue started with its settings applied: the test sets up nothing\n%s", logs.String())
	}
	ctx := testenv.Context(t)
	js := q.JetStream()
	// An older API's start: its settings, rollups allowed.
	cfg := liveConfigOf(t, q)
	cfg.AllowRollup = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("an older API's update of the live stream, short of file storage: %v", err)
	}
	n, err := q.Mend(ctx)
	if err != nil || n != 1 {
		t.Errorf("Mend short of storage with the live stream taking rollups: %d, %v; want 1, nil", n, err)
	}
	if liveConfigOf(t, q).AllowRollup {
		t.Fatal("Mend left the live stream taking rollups while JetStream is short of file storage")
	}
	refusedRollup(t, js, queue.OutputSubjectOf("h2", uuid.New()))
	l := logs.String()
	if !strings.Contains(l, "the live output stream took rollups again") {
		t.Errorf("Mend did not say it turned the live stream's rollups off:\n%s", l)
	}
	if strings.Contains(l, "allow_rollup_hdrs") && strings.Contains(l, "JetStream has no room") {
		t.Errorf("Mend said the live stream's rollups stay until JetStream has room:\n%s", l)
	}
}
