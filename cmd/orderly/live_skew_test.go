package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLiveFeedTellsAStreamMadeAgainWhereTheClockIsBehind: a live feed
// took ORDERLY_LIVE for made again (a NATS restart lost the memory
// stream) when the stream's creation time came after its consumer's.
// Both are the servers' clocks, and in a cluster not the same server's:
// a stream made again where the clock is behind looked older than the
// feed's consumer, and the feed made its consumer again after the last
// sequence it had handed over, on a stream whose sequences start again
// at 1. It said nothing of the hole and skipped everything the new
// stream held below that sequence, the order's chunk among them.
//
// The servers' clocks differ for real: nats-server is built with its
// wall clock set back by ORDERLY_TEST_WALL_SKEW seconds (skewedNATSServerBin),
// and restarted an hour behind, as another server of a cluster whose
// clock is behind answers after a restart. Another API makes the stream
// again as it starts (the feed's own queue is a worker's, which may not
// make streams, so that nothing but the other API can).
func TestLiveFeedTellsAStreamMadeAgainWhereTheClockIsBehind(t *testing.T) {
	bin, err := skewedNATSServerBin()
	if err != nil {
		t.Fatal(err)
	}
	n := newNATSServer(t, t.TempDir(), "")
	n.bin = bin
	startAt := func(skew string) {
		t.Helper()
		n.proc = startFaultProc(t, "nats-server", n.logPath, []string{"PATH=/usr/bin:/bin", "ORDERLY_TEST_WALL_SKEW=" + skew}, n.bin, "-c", n.conf)
		waitHTTPOK(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.httpPort), 60*time.Second, n.proc)
	}
	startAt("0")
	ctx := testenv.Context(t)
	api := testenv.Queue(t, n.url(), "skew-api", queue.Options{})
	nc, err := queue.Connect(n.url(), "skew-feed")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.Bind(ctx, nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	for i := range 6 { // another order's, before: the feed's sequence passes the new stream's start
		if err := api.PublishOutput("h1", uuid.New(), "stdout", int64(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := api.PublishOutput("h1", id, "stdout", 0, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := api.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	js := testenv.JetStream(t, n.url(), "skew-test")
	old, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	feed, err := q.Live(ctx, "h1", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Stop()
	msgs := feed.Messages(ctx)
	take := func(what string) *nats.Msg {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("the feed ended waiting for %s", what)
			}
			return m
		case <-time.After(time.Minute):
			t.Fatalf("no %s in a minute", what)
		}
		return nil
	}
	if m := take("the order's chunk"); m == queue.LiveLost || string(m.Data) != "before" {
		t.Fatalf("the feed handed over %q, want %q", m.Data, "before")
	}

	n.kill9()
	startAt("-3600")
	// The other API makes the streams as it starts, seconds before the
	// feed finds its consumer silent (three heartbeats, 15 s).
	other := testenv.Queue(t, n.url(), "skew-other-api", queue.Options{})
	now, err := js.Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	if !now.CachedInfo().Created.Before(old.CachedInfo().Created) {
		t.Fatalf("the stream made again on the server an hour behind was created at %s, not before the lost one (%s): the clock was not set back",
			now.CachedInfo().Created, old.CachedInfo().Created)
	}
	publishLive(t, other, id, "after")
	if m := take("LiveLost"); m != queue.LiveLost {
		t.Fatalf("after the restart the feed handed over %q, want LiveLost", m.Data)
	}
	if m := take("the chunk published after the restart"); m == queue.LiveLost || string(m.Data) != "after" {
		t.Errorf("then %q, want the chunk published after the restart", m.Data)
	}
}

// publishLive sends one stdout chunk of order id of h1 on q and waits until
// the server has it, trying again while the connection comes back.
func publishLive(t *testing.T, q *queue.Queue, id uuid.UUID, data string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testenv.Context(t), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(q.Conn())
	if err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		if q.PublishOutput("h1", id, "stdout", 100, []byte(data)) == nil && q.Conn().FlushWithContext(ctx) == nil {
			if st, err := js.Stream(ctx, queue.LiveStream); err == nil && st.CachedInfo().State.Msgs > 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("could not publish after the restart")
}

// skewedNATSServerBin builds nats-server as natsServerBin does, with its
// wall clock (time.Now) set off by the seconds in ORDERLY_TEST_WALL_SKEW:
// a real server whose clock disagrees with the others', which one
// machine cannot otherwise give (a Go binary reads the clock without the
// C library, so libfaketime does not reach it). Only the wall reading
// moves; the monotonic one, which timers and durations use, does not, as
// when a host's clock is off. The go command's overlay replaces
// time.Now's file for this build only, once per test binary (the build
// cache keeps it after the first, which takes minutes on a loaded
// machine: the standard library is compiled again).
var skewedNATSServerBin = sync.OnceValues(func() (string, error) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %w", err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src", "time")
	timeGo, err := os.ReadFile(filepath.Join(src, "time.go"))
	if err != nil {
		return "", err
	}
	const now = "func Now() Time {\n\tsec, nsec, mono := runtimeNow()\n"
	if strings.Count(string(timeGo), now) != 1 {
		return "", fmt.Errorf("%s: time.Now does not start with %q any more", filepath.Join(src, "time.go"), now)
	}
	dir, err := os.MkdirTemp("", "skewed-nats-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{
		"time.go": strings.Replace(string(timeGo), now, now+"\tsec += wallSkew\n", 1),
		"wallskew.go": `package time

import "syscall"

// wallSkew is how far this build's wall clock is off, in seconds.
var wallSkew = func() int64 {
	s, _ := syscall.Getenv("ORDERLY_TEST_WALL_SKEW")
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	n, err := atoi(s)
	if err != nil {
		return 0
	}
	if neg {
		n = -n
	}
	return int64(n)
}()
`,
	}
	var replace []string
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return "", err
		}
		target := filepath.Join(src, name)
		if name == "wallskew.go" {
			target = filepath.Join(src, "zz_wallskew.go")
		}
		replace = append(replace, fmt.Sprintf("%q: %q", target, path))
	}
	overlay := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlay, []byte(`{"Replace": {`+strings.Join(replace, ", ")+`}}`), 0o644); err != nil {
		return "", err
	}
	path := filepath.Join(filepath.Dir(orderlyBin), "nats-server-skewed")
	out, err := exec.Command("go", "build", "-overlay", overlay, "-o", path, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build nats-server with a skewed clock: %w\n%s", err, out)
	}
	return path, nil
})
