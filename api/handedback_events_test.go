package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// armedClaim is the real store, except that the first claim once armed
// waits until open is closed.
type armedClaim struct {
	worker.Store
	armed   atomic.Bool
	reached chan struct{}
	open    chan struct{}
}

func (s *armedClaim) Claim(ctx context.Context, id uuid.UUID, w string, seq uint64) (*order.Order, bool, error) {
	if s.armed.CompareAndSwap(true, false) {
		close(s.reached)
		<-s.open
	}
	return s.Store.Claim(ctx, id, w, seq)
}

// TestFollowerSeesAnOrderHandedBackBeforeItStartedQueuedAgain: an order
// whose worker is stopped while the order waits for a file descriptor
// to start is handed back unstarted (queued, attempt 1, no result); its
// SSE followers, told `started` when the wait began, are told `queued`
// again (with handed_back) at the hand-back, and `started` once the
// host's next worker runs it. A follower that comes after the hand-back
// reads the live stream's started event and, after it, the same
// `queued`. Before, the worker's started event stood alone: a follower
// saw `started`, then nothing until the next tenure ran the order, and
// one that came meanwhile was told the order ran while PostgreSQL held
// it queued.
func TestFollowerSeesAnOrderHandedBackBeforeItStartedQueuedAgain(t *testing.T) {
	const host = "fd-handback"
	e := newAPIEnv(t, envOptions{})
	store := &armedClaim{Store: e.store, reached: make(chan struct{}), open: make(chan struct{})}
	logs := &testenv.LogBuffer{}
	stop := runHandBackWorker(t, e.q, store, host, slog.New(slog.NewJSONHandler(logs, nil)))
	e.submit("alice", map[string]any{"host": host, "command": "true"}, "?wait=20", http.StatusOK)

	store.armed.Store(true)
	o := e.submit("alice", map[string]any{"host": host, "command": "echo", "args": []string{"ran"}}, "", http.StatusAccepted)
	select {
	case <-store.reached:
	case <-testenv.Context(t).Done():
		t.Fatal("the order was never claimed")
	}
	// Followed from before its claim: the stream's connection and its
	// consumer exist before the descriptors run out.
	first := followEvents(t, e, o.ID, "")
	nextEvent(t, first, "queued", "the stream's first event")
	release := exhaustDescriptors(t)
	close(store.open)
	testenv.WaitUntil(t, 20*time.Second, "the worker to say it is out of file descriptors", func() bool {
		return strings.Contains(logs.String(), "out of file descriptors")
	})
	nextEvent(t, first, "started", "the claim's started event")
	stopForHandBack(t, stop, release, e.store, o.ID)
	if !strings.Contains(logs.String(), "order handed back unstarted") {
		t.Fatalf("no line says the order was handed back:\n%s", logs)
	}
	// No worker serves the host now: only the hand-back can say queued.
	handedBack(t, nextEvent(t, first, "queued", "the hand-back's queued event (the follower was left with started)"))

	late := followEvents(t, e, o.ID, "")
	nextEvent(t, late, "queued", "a late follower's first event")
	nextEvent(t, late, "started", "a late follower's replay of the started event")
	handedBack(t, nextEvent(t, late, "queued", "a late follower's replay of the hand-back (it was left with started)"))

	e.startWorker(host)
	for _, f := range []<-chan rawEvent{first, late} {
		nextEvent(t, f, "started", "the next tenure's started event")
		if ev := nextEvent(t, f, "stdout", "the order's output"); !strings.Contains(ev.data, `"ran\n"`) {
			t.Errorf("stdout event %s, want the order's \"ran\"", ev.data)
		}
		if ev := nextEvent(t, f, "finished", "the order's end"); !strings.Contains(ev.data, `"status":"succeeded"`) || !strings.Contains(ev.data, `"attempt":2`) {
			t.Errorf("finished %s, want succeeded at attempt 2", ev.data)
		}
	}
}

// stopForHandBack stops the worker (stop) while order id waits for a
// file descriptor, gives the descriptors back (release), and fails
// unless the order is queued again as never started: attempt 1, no
// result.
func stopForHandBack(t *testing.T, stop func() error, release func(), store *postgres.Store, id uuid.UUID) {
	t.Helper()
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("the worker stopped with %v", err)
	}
	release()
	got, err := store.GetOrder(testenv.Context(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != order.StatusQueued || got.Attempt != 1 || got.Result != nil || got.StartedAt != nil {
		t.Fatalf("the order after its worker's stop: %s, attempt %d, started %v, result %+v; want queued again, attempt 1, never started",
			got.Status, got.Attempt, got.StartedAt, got.Result)
	}
}

// handedBack fails unless ev, a queued event, says the order was handed
// back.
func handedBack(t *testing.T, ev rawEvent) {
	t.Helper()
	var d struct {
		Status     string `json:"status"`
		HandedBack bool   `json:"handed_back"`
	}
	if err := json.Unmarshal([]byte(ev.data), &d); err != nil || d.Status != "queued" || !d.HandedBack || ev.id == "" || ev.id == "0" {
		t.Fatalf("queued event id %q %s, want a live event (its id) with status queued and handed_back", ev.id, ev.data)
	}
}

// runHandBackWorker runs a real worker for host on store and q with a
// short shutdown grace; stop asks it to stop and returns Run's error.
func runHandBackWorker(t *testing.T, q *queue.Queue, store worker.Store, host string, logger *slog.Logger) (stop func() error) {
	t.Helper()
	hp, err := hostpolicy.FromConfig(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	w := worker.New(worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 2 * time.Second,
		ShutdownGrace: 500 * time.Millisecond}, store, q, hp, executor.New(logger), logger)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	return stop
}

// followEvents follows order id's event stream as alice, resumed after
// lastID when it is set, until the test ends, handing each event on.
func followEvents(t *testing.T, e *apiEnv, id uuid.UUID, lastID string) <-chan rawEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(testenv.Context(t))
	resp := openEvents(t, ctx, e, "alice", "/v1/orders/"+id.String()+"/events", lastID)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		t.Fatalf("events of order %s: %d", id, resp.StatusCode)
	}
	ch := make(chan rawEvent, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		var ev rawEvent
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" {
					ch <- ev
				}
				ev = rawEvent{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[len("id: "):]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		wg.Wait()
	})
	return ch
}

// nextEvent returns the next event of ch, which must be named want and
// come within 15 s.
func nextEvent(t *testing.T, ch <-chan rawEvent, want, what string) rawEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the stream ended", what)
		}
		if ev.event != want {
			t.Fatalf("%s: got %s %s (id %q), want %s", what, ev.event, ev.data, ev.id, want)
		}
		return ev
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: no %s event within 15 s", what, want)
	}
	return rawEvent{}
}

// exhaustDescriptors lowers the test process's RLIMIT_NOFILE to 4096
// and opens /dev/null until no descriptor is left; release closes them
// and puts the limit back.
func exhaustDescriptors(t *testing.T) (release func()) {
	t.Helper()
	var was syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
		t.Fatal(err)
	}
	lower := was
	lower.Cur = 4096
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lower); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, f := range held {
				f.Close()
			}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &was); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	return release
}
