package worker

import (
	"context"
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
	return ackFixtureOn(t, nc, n)
}

// ackFixtureOn is ackFixture on the connection nc.
func ackFixtureOn(t *testing.T, nc *nats.Conn, n int) (w *Worker, a *acks, st *stall, cons jetstream.Consumer, msgs []jetstream.Msg, warn *warnings) {
	t.Helper()
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
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(30*time.Second)) // at once, unless the machine stalls
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
	a, err = newAcks(nc, st, warn.add, nil)
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
		w.ack(newDelivery(m), uuid.New())
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
	w, a, st, cons, msgs, warn := ackFixture(t, 1)
	// Only the refusal makes it suspect here: with ackConfirmWait, a
	// refusal slower than that on a loaded machine was taken for an ack
	// never confirmed, and the warning did not say 503.
	a.wait = time.Hour
	js, err := jetstream.New(w.acks.Load().nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(t.Context(), "ACKS", cons.CachedInfo().Name); err != nil {
		t.Fatal(err)
	}
	w.ack(newDelivery(msgs[0]), uuid.New())
	for deadline := time.Now().Add(30 * time.Second); !st.suspect.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an ack the server refused did not make the consumer suspect within 30 s")
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

// heldReply is a delivery whose ack goes to a subject of the test's, which
// holds it: the ack is sent and not yet taken by the server.
type heldReply struct {
	jetstream.Msg
	reply string
}

func (m heldReply) Reply() string { return m.reply }

// An idle worker's stall check waits for the confirmation of the ack it
// sent last: until the server has taken that ack it counts the message as
// pending, and the check took that for a lost ack and rewound. It did so
// after each worker start under a steady stream of orders (a rolling
// upgrade's: the order's ack raced the check that its end pokes). The ack
// is held here until the check has run twenty times; then it reaches the
// server and the confirmation clears the suspicion, with no rewind.
func TestStallCheckWaitsForAnAckInFlight(t *testing.T) {
	w, a, st, cons, msgs, _ := ackFixture(t, 1)
	a.wait = time.Hour // the ack is held, not lost
	held, err := a.nc.SubscribeSync("held.ack")
	if err != nil {
		t.Fatal(err)
	}
	st.every = 5 * time.Millisecond
	st.loopIdle.Store(true)
	st.feederIdle.Store(true)
	w.ack(newDelivery(heldReply{Msg: msgs[0], reply: "held.ack"}), uuid.New())
	ackMsg, err := held.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(t.Context()); err != nil || info.NumAckPending != 1 {
		t.Fatalf("consumer: %+v, %v; want the held ack's message pending", info, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	done := make(chan struct{})
	st.suspectNow()
	go func() {
		defer close(done)
		st.watch(ctx, cons, nil, func(err error) { stopped <- err }, t.Logf)
	}()
	defer func() { cancel(); <-done }()
	for st.ticks.Load() < 20 {
		select {
		case err := <-stopped:
			t.Fatalf("the stall check stopped the tenure (%v) after %d checks while the ack was in flight", err, st.ticks.Load())
		case <-time.After(st.every):
		}
	}

	// The ack reaches the server, then its confirmation the worker.
	if err := msgs[0].DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := ackMsg.Respond(nil); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); st.suspect.Load(); {
		select {
		case err := <-stopped:
			t.Fatalf("the stall check stopped the tenure (%v) after the ack was confirmed", err)
		case <-time.After(st.every):
		}
		if time.Now().After(deadline) {
			t.Fatal("the consumer is still suspect 30 s after the ack was confirmed")
		}
	}
}
