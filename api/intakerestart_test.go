package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// recordedHold holds the intake up right after it recorded the order of
// the submission whose idempotency key is key, until release is closed:
// the order is recorded, the submission neither answered nor acknowledged.
type recordedHold struct {
	intake.Store
	key     string
	once    *sync.Once
	entered chan struct{}
	release chan struct{}
}

func (h recordedHold) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	stored, err := h.Store.InsertOrder(ctx, o)
	if err == nil && o.IdempotencyKey == h.key {
		h.once.Do(func() { close(h.entered); <-h.release })
	}
	return stored, err
}

// TestNATSRestartLosesTheIntakeConsumerNotTheSubmissions: nats-server
// restarts (its store kept) while the intake holds a submission whose
// order it recorded, two more stored behind it. The intake consumer keeps
// its state in memory on a single server (queue's intakeConfig), so the
// restart loses it; the intake creates it again and receives every stored
// submission from the first as new. The one recorded before is answered
// from its record (its stored message's order id, its Nats-Msg-Id), not
// recorded again; each order runs once, in the order submitted.
func TestNATSRestartLosesTheIntakeConsumerNotTheSubmissions(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	hold := recordedHold{key: "nrs-b", once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), hosts: []string{"nrs"},
		intakeStore: func(s intake.Store) intake.Store { hold.Store = s; return hold }})
	defer func() {
		select {
		case <-hold.release:
		default:
			close(hold.release)
		}
	}()
	log := filepath.Join(t.TempDir(), "ran")
	body := func(name string) map[string]any {
		return map[string]any{"command": "sh", "args": []string{"-c", `echo "$1" >> "$2"`, "_", name, log}}
	}
	if a := e.publish("alice", "nrs", "nrs-a", body("a")); a.Order == nil {
		t.Fatalf("before the restart: %+v", a.Error)
	}
	c, err := e.q.JetStream().Consumer(t.Context(), queue.SubmitStream, queue.IntakeConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	if !c.CachedInfo().Config.MemoryStorage {
		t.Fatal("the intake consumer keeps its state on disk on a single server")
	}

	nc, inbox, sub := replyInbox(t, e.natsURL)
	for _, name := range []string{"b", "c", "d"} {
		publishSubmission(t, nc, e.tokens["alice"], inbox, "nrs", "nrs-"+name, body(name))
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the intake did not record the second submission")
	}

	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 10*time.Second, "the clients reconnect", func() bool {
		return e.q.Conn().IsConnected() && nc.IsConnected()
	})
	// The path under test: the restart lost the consumer, not the stream.
	// (Asked again while the request times out: right after a restart a
	// JetStream request can go unanswered, 5 s once in CI, while the held
	// intake cannot create the consumer again.)
	lookup := testenv.Answered(t, "the intake consumer's lookup", func(ctx context.Context) error {
		_, err := e.q.JetStream().Consumer(ctx, queue.SubmitStream, queue.IntakeConsumerName)
		return err
	})
	if !errors.Is(lookup, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the intake consumer after the restart: %v, want it gone with the server's memory", lookup)
	}
	close(hold.release)

	// Every submission is answered with its one order, the held one
	// perhaps twice (by the attempt that recorded it, and from its record
	// after the restart), never with a refusal.
	orders := map[string]string{}
	for len(orders) < 3 {
		msg, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("answers so far %v: %v", orders, err)
		}
		var a api.IntakeAnswer
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			t.Fatal(err)
		}
		key := msg.Header.Get("Nats-Msg-Id")
		if a.Order == nil {
			t.Fatalf("%s answered %+v", key, a.Error)
		}
		if prev, ok := orders[key]; ok && prev != a.Order.ID.String() {
			t.Fatalf("%s answered with order %s, then %s", key, prev, a.Order.ID)
		}
		orders[key] = a.Order.ID.String()
	}
	testenv.WaitUntil(t, 30*time.Second, "the four orders ran", func() bool {
		var n int
		err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE host = 'nrs' AND status = 'succeeded'`).Scan(&n)
		return err == nil && n == 4
	})
	var n, attempts int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*), max(attempt) FROM orders WHERE host = 'nrs'`).Scan(&n, &attempts); err != nil {
		t.Fatal(err)
	}
	if n != 4 || attempts != 1 {
		t.Errorf("%d orders of host nrs, at most attempt %d: want 4, each run in attempt 1", n, attempts)
	}
	if b, _ := os.ReadFile(log); string(b) != "a\nb\nc\nd\n" {
		t.Fatalf("the orders ran %q, want a, b, c, d once each in order", b)
	}
}

// TestNATSRestartCountsAHeldSubmissionOnce: nats-server restarts while
// the intake holds a submission it counted against its principal's rate
// limit (its order recorded, not yet acknowledged). The restart loses the
// intake consumer, and the submission comes again as a first delivery;
// it used to be counted a second time, so that with a limit of four a
// minute the fourth of four submissions was refused as rate_limited. The
// replica remembers what it counted (Server.taken): the four are each counted
// once and answered with their orders.
func TestNATSRestartCountsAHeldSubmissionOnce(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	hold := recordedHold{key: "rl-b", once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	e := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), ratePerPrincipal: 4,
		intakeStore: func(s intake.Store) intake.Store { hold.Store = s; return hold }})
	defer func() {
		select {
		case <-hold.release:
		default:
			close(hold.release)
		}
	}()
	body := map[string]any{"command": "true"}
	if a := e.publish("alice", "rl", "rl-a", body); a.Order == nil {
		t.Fatalf("before the restart: %+v", a.Error)
	}
	nc, inbox, sub := replyInbox(t, e.natsURL)
	for _, name := range []string{"b", "c", "d"} {
		publishSubmission(t, nc, e.tokens["alice"], inbox, "rl", "rl-"+name, body)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the intake did not record the second submission")
	}
	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 10*time.Second, "the clients reconnect", func() bool {
		return e.q.Conn().IsConnected() && nc.IsConnected()
	})
	close(hold.release)

	orders := map[string]bool{}
	for len(orders) < 3 {
		msg, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("answers so far %v: %v", orders, err)
		}
		var a api.IntakeAnswer
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			t.Fatal(err)
		}
		key := msg.Header.Get("Nats-Msg-Id")
		if a.Order == nil {
			t.Fatalf("%s answered %+v, want its order: the held submission was counted twice", key, a.Error)
		}
		orders[key] = true
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections WHERE code = 'rate_limited'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rate_limited rows in rejections, want none", n)
	}
}

// TestNATSRestartCountsASubmissionAnotherReplicaHeldOnce: replica a holds
// a submission whose order it recorded (counted against alice's rate
// limit), unacknowledged, when it stops taking submissions and
// nats-server restarts, losing the intake consumer; replica b creates the
// consumer again, is pinned, and receives every stored submission as a
// first delivery (without the restart, a redelivery: counted). b does not know
// what a counted (a's memory of it, Server.taken, is a's own): it
// counted the held one again under its own limit of two a minute, and
// refused the last of the three as rate_limited. Stored before the
// consumer b pulls from was created, the held one is looked up first and
// answered from its record, uncounted: a submission is counted once in
// the fleet (docs/reliability.md).
func TestNATSRestartCountsASubmissionAnotherReplicaHeldOnce(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	hold := recordedHold{key: "rl2-b", once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	a := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), ratePerPrincipal: 2,
		intakeStore: func(s intake.Store) intake.Store { hold.Store = s; return hold }})
	defer func() {
		select {
		case <-hold.release:
		default:
			close(hold.release)
		}
	}()
	body := map[string]any{"command": "true"}
	if ans := a.publish("alice", "rl2", "rl2-a", body); ans.Order == nil {
		t.Fatalf("before the restart: %+v", ans.Error)
	}
	b := newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: a.tokens, ratePerPrincipal: 2})
	nc, inbox, sub := replyInbox(t, a.natsURL)
	for _, name := range []string{"b", "c", "d"} {
		publishSubmission(t, nc, a.tokens["alice"], inbox, "rl2", "rl2-"+name, body)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("replica a did not record the second submission")
	}
	// a pulls no more (its loops end, as a replica's that dies there):
	// whatever the race after the restart, b is the one pinned.
	a.stop()
	testenv.NATSServerRestarted(t, ns)
	testenv.WaitUntil(t, 10*time.Second, "the clients reconnect", func() bool {
		return a.q.Conn().IsConnected() && b.q.Conn().IsConnected() && nc.IsConnected()
	})

	orders := map[string]bool{}
	for len(orders) < 3 {
		msg, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("answers so far %v: %v", orders, err)
		}
		var ans api.IntakeAnswer
		if err := json.Unmarshal(msg.Data, &ans); err != nil {
			t.Fatal(err)
		}
		key := msg.Header.Get("Nats-Msg-Id")
		if ans.Order == nil {
			t.Fatalf("%s answered %+v, want its order: replica b counted the submission a held again", key, ans.Error)
		}
		orders[key] = true
	}
	close(hold.release)
	var n int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE idempotency_key LIKE 'rl2-%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d orders recorded, want 4 (one each)", n)
	}
}

// TestNATSRestartCountsOnceUnderAConsumerAnotherReplicaMade: as
// TestNATSRestartCountsASubmissionAnotherReplicaHeldOnce, but the intake
// consumer the restart lost is made again by another replica while
// replica b is away. b's handle, taken up before the restart, said the
// consumer was made when a made it, before the held submission was
// stored, and b's pulls went on to the new consumer once b was back,
// without a word of the loss: b took the held submission for one stored
// since and counted it again under its limit of two a minute, and
// refused the last of the two submissions after it as rate_limited. b
// now takes the creation of the consumer it is pinned to from the rewind
// that starts each pin. b's reconnect is held until the consumer is made
// (a reconnect delay that waits for it), not hoped to come after it.
func TestNATSRestartCountsOnceUnderAConsumerAnotherReplicaMade(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	hold := recordedHold{key: "rl3-b", once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	a := newAPIEnv(t, envOptions{natsURL: ns.ClientURL(), ratePerPrincipal: 2, logger: testenv.Logger(t).With("replica", "a"),
		intakeStore: func(s intake.Store) intake.Store { hold.Store = s; return hold }})
	defer func() {
		select {
		case <-hold.release:
		default:
			close(hold.release)
		}
	}()
	body := map[string]any{"command": "true"}
	if ans := a.publish("alice", "rl3", "rl3-a", body); ans.Order == nil {
		t.Fatalf("before the restart: %+v", ans.Error)
	}
	var away atomic.Bool
	back := make(chan struct{})
	var backOnce sync.Once
	letBack := func() { backOnce.Do(func() { close(back) }) }
	defer letBack()
	b := newAPIEnv(t, envOptions{dsn: a.dsn, natsURL: a.natsURL, tokens: a.tokens, ratePerPrincipal: 2, logger: testenv.Logger(t).With("replica", "b"),
		natsOpts: []nats.Option{nats.CustomReconnectDelay(func(int) time.Duration {
			if away.Load() {
				<-back
			}
			return 50 * time.Millisecond
		})}})
	// Stored past the consumer's creation by more than the clock skew the
	// intake allows for (2 s): b's old handle must not cover it.
	c, err := a.q.JetStream().Consumer(t.Context(), queue.SubmitStream, queue.IntakeConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	made := c.CachedInfo().Created
	testenv.WaitUntil(t, 10*time.Second, "3 s past the intake consumer's creation", func() bool { return time.Since(made) > 3*time.Second })
	nc, inbox, sub := replyInbox(t, a.natsURL)
	submit := func(name string) {
		t.Helper()
		publishSubmission(t, nc, a.tokens["alice"], inbox, "rl3", "rl3-"+name, body)
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	answered := func(name string) {
		t.Helper()
		for {
			msg, err := sub.NextMsg(30 * time.Second)
			if err != nil {
				t.Fatalf("no answer to rl3-%s: %v", name, err)
			}
			if msg.Header.Get("Nats-Msg-Id") != "rl3-"+name {
				continue // the first attempt's, say
			}
			var ans api.IntakeAnswer
			if err := json.Unmarshal(msg.Data, &ans); err != nil {
				t.Fatal(err)
			}
			if ans.Order == nil {
				t.Fatalf("rl3-%s answered %+v, want its order: replica b counted the submission a held again", name, ans.Error)
			}
			return
		}
	}
	submit("b")
	select {
	case <-hold.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("replica a did not record the second submission")
	}
	// a holds it, unacknowledged, through the restart; then it takes no
	// more. b is away from the restart until the consumer is made again.
	away.Store(true)
	ns = testenv.NATSServerRestarted(t, ns)
	a.stop()
	other := testenv.Queue(t, ns.ClientURL(), "another replica", queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second})
	if err := testenv.Answered(t, "the intake consumer's creation", func(ctx context.Context) error {
		_, err := other.IntakeConsumer(ctx)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if b.q.Conn().IsConnected() {
		t.Fatal("replica b reconnected though its reconnect was held")
	}
	// The answers' inbox subscribed again before b answers anything.
	testenv.WaitUntil(t, 10*time.Second, "the submitter reconnects", func() bool { return nc.IsConnected() && nc.Flush() == nil })
	letBack()
	answered("b")
	submit("c")
	answered("c")
	submit("d")
	answered("d")
	close(hold.release)
	var n int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE idempotency_key LIKE 'rl3-%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d orders recorded, want 4 (one each)", n)
	}
}
