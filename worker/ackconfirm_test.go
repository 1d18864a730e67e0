package worker

import (
	"fmt"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/testenv"
)

// ackFixture delivers n messages of a stream of its own, unacked, and
// returns a worker whose tenure confirms acks with a.
func ackFixture(t *testing.T, n int) (w *Worker, a *acks, st *stall, cons jetstream.Consumer, msgs []jetstream.Msg, warn *warnings) {
	t.Helper()
	nc, err := nats.Connect(testenv.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ACKS", Subjects: []string{"acks.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cons, err = s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "acks", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("acks.%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("%d deliveries, want %d", len(msgs), n)
	}
	warn = &warnings{}
	st = newStall(time.Second)
	st.suspect.Store(false)
	a, err = newAcks(nc, st, warn.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.end)
	w = &Worker{}
	w.acks.Store(a)
	return w, a, st, cons, msgs, warn
}

// waitAcked waits until the consumer holds no unacked message and no ack
// waits for its confirmation.
func waitAcked(t *testing.T, a *acks, cons jetstream.Consumer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		pending := len(a.pending)
		a.mu.Unlock()
		if info.NumAckPending == 0 && pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages unacked, %d acks unconfirmed", info.NumAckPending, pending)
		}
	}
}

// An ack is published from the goroutine that settles the order, and its
// confirmation awaited by a timer: no goroutine per order (one blocked in
// DoubleAck before, in a process that runs GOMAXPROCS 1, so the ack went
// out in a socket write of its own after the finished event's). Counted:
// goroutines created by 200 acks, the embedded NATS server's included.
func TestAcksConfirmedWithoutAGoroutineEach(t *testing.T) {
	const n = 200
	w, a, st, cons, msgs, warn := ackFixture(t, n)
	before := goroutinesCreated()
	for _, m := range msgs {
		w.ack(m, uuid.New())
	}
	waitAcked(t, a, cons)
	created := goroutinesCreated() - before
	if created >= n/2 {
		t.Fatalf("%d goroutines created by %d acks", created, n)
	}
	if st.suspect.Load() {
		t.Fatalf("confirmed acks made the consumer suspect: %s", warn.all())
	}
	t.Logf("%d goroutines created by %d acks", created, n)
}

// An ack the server refuses (the consumer has no leader, or is gone:
// nobody listens on its ack subject) makes the tenure's consumer suspect
// at once; one never confirmed does after ackConfirmWait
// (TestLostAcksDoNotStallTheHost).
func TestAckRefusedMakesTheConsumerSuspect(t *testing.T) {
	w, _, st, cons, msgs, warn := ackFixture(t, 1)
	js, err := jetstream.New(w.acks.Load().nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(t.Context(), "ACKS", cons.CachedInfo().Name); err != nil {
		t.Fatal(err)
	}
	w.ack(msgs[0], uuid.New())
	for deadline := time.Now().Add(2 * ackConfirmWait); !st.suspect.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an ack nobody confirmed did not make the consumer suspect")
		}
	}
	if !strings.Contains(warn.all(), "ack not confirmed") || !strings.Contains(warn.all(), "status 503") {
		t.Fatalf("warnings: %q", warn.all())
	}
}

// goroutinesCreated is the process's count of goroutines created so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) add(msg string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, fmt.Sprint(append([]any{msg}, args...)...))
}

func (w *warnings) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.msgs, "\n")
}
