package intake_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	alice = auth.Principal{Name: "alice", Roles: []string{"ops"}}
	bob   = auth.Principal{Name: "bob", Roles: []string{"ops"}}
)

// failingPublisher is the real queue, except that its next publishes fail
// while failures is positive: the only way to lose a publish on demand.
type failingPublisher struct {
	*queue.Queue
	failures atomic.Int64
}

func (p *failingPublisher) Publish(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
	if p.failures.Add(-1) >= 0 {
		return 0, errors.New("injected publish failure")
	}
	return p.Queue.Publish(ctx, host, id)
}

// intakeEnv is the intake service on the real PostgreSQL and NATS.
type intakeEnv struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	store *postgres.Store
	q     *queue.Queue
	pub   *failingPublisher
	svc   *intake.Service
	// policy is svc's: for a test that makes a Service of its own.
	policy func() intake.Authorizer
}

func newIntakeEnv(t *testing.T, opts intake.Options) *intakeEnv {
	t.Helper()
	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	nc, err := queue.Connect(testenv.NATS(t), "intake-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q, err := queue.New(ctx, nc, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New([]config.Rule{{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"h*"}, Allow: []string{`^(echo|true)( |$)`}}})
	if err != nil {
		t.Fatal(err)
	}
	e := &intakeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool), q: q, pub: &failingPublisher{Queue: q},
		policy: func() intake.Authorizer { return pol }}
	e.svc = intake.New(e.store, e.pub, e.policy, opts, testenv.Logger(t))
	return e
}

func newOrder(host, command string, args ...string) *order.Order {
	return &order.Order{Kind: order.KindExec, Host: host, Command: command, Args: args, Source: "rest"}
}

// queued returns the ids in host's stream subject, in stream order.
func (e *intakeEnv) queued(host string) []uuid.UUID {
	e.t.Helper()
	st, err := e.q.JetStream().Stream(e.ctx, queue.OrdersStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []uuid.UUID
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(e.ctx, seq)
		if err != nil {
			continue // deleted
		}
		if m.Subject != queue.OrdersSubject+host {
			continue
		}
		id, err := uuid.ParseBytes(m.Data)
		if err != nil || m.Header.Get("Nats-Msg-Id") != id.String() {
			e.t.Fatalf("message %d: %q with Nats-Msg-Id %q, want an order id as both", seq, m.Data, m.Header.Get("Nats-Msg-Id"))
		}
		out = append(out, id)
	}
	return out
}

func (e *intakeEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestSubmitRecordsThenPublishes: an accepted order is a queued row with
// its "submitted" event and one message on its host's subject carrying
// its id; the publish mark is cleared off the hot path by Run.
func TestSubmitRecordsThenPublishes(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.svc.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })

	var ids []uuid.UUID
	for _, host := range []string{"h1", "h2", "h1"} {
		o, err := e.svc.Submit(e.ctx, alice, newOrder(host, "echo", "hi"))
		if err != nil {
			t.Fatal(err)
		}
		if o.Status != order.StatusQueued || o.Principal != "alice" || o.Policy.Decision != "allow" {
			t.Fatalf("submitted order: status %s principal %q policy %+v", o.Status, o.Principal, o.Policy)
		}
		ids = append(ids, o.ID)
	}
	if got := e.queued("h1"); len(got) != 2 || got[0] != ids[0] || got[1] != ids[2] {
		t.Fatalf("h1's subject holds %v, want %v in submission order", got, []uuid.UUID{ids[0], ids[2]})
	}
	if got := e.queued("h2"); len(got) != 1 || got[0] != ids[1] {
		t.Fatalf("h2's subject holds %v", got)
	}
	for _, id := range ids {
		if n := e.count(`SELECT count(*) FROM orders o JOIN order_events e ON e.order_id = o.id
			WHERE o.id = $1 AND o.status = 'queued' AND e.type = 'submitted'`, id); n != 1 {
			t.Fatalf("order %s: %d queued rows with a submitted event", id, n)
		}
	}
	testenv.WaitUntil(t, 10*time.Second, "publish marks cleared", func() bool { return e.count(`SELECT count(*) FROM unpublished`) == 0 })
}

// TestSubmitRefusals: an order refused by validation, the screen or the
// policy is neither recorded nor published.
func TestSubmitRefusals(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{Screen: func(o *order.Order) error {
		if _, ok := o.Env["LD_PRELOAD"]; ok {
			return order.FieldError(order.CodeInvalid, "env", "LD_PRELOAD is not allowed")
		}
		return nil
	}})
	withEnv := newOrder("h1", "echo")
	withEnv.Env, withEnv.EnvNames = map[string]string{"LD_PRELOAD": "/tmp/x.so"}, []string{"LD_PRELOAD"}
	tests := []struct {
		name string
		p    auth.Principal
		o    *order.Order
		want order.Code
	}{
		{"host is not a subject token", alice, newOrder("h1.x", "echo"), order.CodeInvalid},
		{"host is a wildcard", alice, newOrder("h>", "echo"), order.CodeInvalid},
		{"no command", alice, newOrder("h1", ""), order.CodeInvalid},
		{"screened env", alice, withEnv, order.CodeInvalid},
		{"command not allowed", alice, newOrder("h1", "cat", "/etc/hostname"), order.CodeForbidden},
		{"host not allowed", alice, newOrder("db1", "echo"), order.CodeForbidden},
		{"principal without a rule", auth.Principal{Name: "eve"}, newOrder("h1", "echo"), order.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Submit(e.ctx, tt.p, tt.o)
			if order.ErrorCode(err) != tt.want {
				t.Fatalf("err %v (code %q), want code %q", err, order.ErrorCode(err), tt.want)
			}
			if n := e.count(`SELECT count(*) FROM orders`); n != 0 {
				t.Fatalf("%d orders recorded", n)
			}
		})
	}
	if got := append(e.queued("h1"), e.queued("db1")...); len(got) != 0 {
		t.Fatalf("refused orders published: %v", got)
	}
}

// TestIdempotencyKeyPerPrincipal: a principal's repeated key returns its
// first order and queues nothing new; another principal's same key is a new
// order of its own.
func TestIdempotencyKeyPerPrincipal(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	submit := func(p auth.Principal, arg string) *order.Order {
		o := newOrder("h1", "echo", arg)
		o.IdempotencyKey = "k-1"
		got, err := e.svc.Submit(e.ctx, p, o)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		return got
	}
	first := submit(alice, "x")
	again := submit(alice, "x")
	if again.ID != first.ID {
		t.Fatalf("alice's retry is order %s, want %s", again.ID, first.ID)
	}
	bobs := submit(bob, "x")
	if bobs.ID == first.ID || bobs.Principal != "bob" {
		t.Fatalf("bob's order with alice's key: %s of %q", bobs.ID, bobs.Principal)
	}
	if got := e.queued("h1"); len(got) != 2 || got[0] != first.ID || got[1] != bobs.ID {
		t.Fatalf("queued %v, want alice's then bob's order once each", got)
	}
	if n := e.count(`SELECT count(*) FROM orders`); n != 2 {
		t.Fatalf("%d orders, want 2", n)
	}
}

// TestReconcileRepublishesLostPublishes: when the publish fails the order
// is recorded and ErrNotPublished says so; the reconciler publishes it
// once it is old enough, exactly once.
func TestReconcileRepublishesLostPublishes(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{ReconcileAfter: time.Millisecond})
	e.pub.failures.Store(1)
	o, err := e.svc.Submit(e.ctx, alice, newOrder("h1", "true"))
	var np *intake.ErrNotPublished
	if !errors.As(err, &np) || np.ID != o.ID {
		t.Fatalf("err %v, want ErrNotPublished for %s", err, o.ID)
	}
	if got := e.queued("h1"); len(got) != 0 {
		t.Fatalf("queued %v after a failed publish", got)
	}
	// The order must be older than ReconcileAfter by PostgreSQL's clock,
	// which judges it.
	testenv.WaitUntil(t, 10*time.Second, "the order is older than ReconcileAfter", func() bool {
		return e.count(`SELECT count(*) FROM orders WHERE submitted_at < now() - interval '5 ms'`) == 1
	})
	n, err := e.svc.Reconcile(e.ctx)
	if err != nil || n != 1 {
		t.Fatalf("reconcile: %d %v, want 1", n, err)
	}
	if got := e.queued("h1"); len(got) != 1 || got[0] != o.ID {
		t.Fatalf("queued %v after reconcile, want %s", got, o.ID)
	}
	if n, err := e.svc.Reconcile(e.ctx); err != nil || n != 0 {
		t.Fatalf("second reconcile: %d %v, want 0", n, err)
	}
	if got := e.queued("h1"); len(got) != 1 {
		t.Fatalf("queued %v, want the order once", got)
	}
}

// TestPruneKeepsRecentAndUnfinished: retention deletes finished orders
// older than it, with their events, old rejections, old delegations of
// orders never recorded and old maintenance switches, and nothing else.
func TestPruneKeepsRecentAndUnfinished(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{Retention: func() time.Duration { return time.Hour }})
	var ids []uuid.UUID
	for range 3 {
		o, err := e.svc.Submit(e.ctx, alice, newOrder("h1", "true"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	old, recent, queuedOld := ids[0], ids[1], ids[2]
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET status = 'succeeded', submitted_at = now() - interval '3 hours',
		finished_at = now() - interval '2 hours' WHERE id = $1`, old); err != nil {
		t.Fatal(err)
	}
	// Submitted long ago, finished recently: kept.
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET status = 'succeeded', submitted_at = now() - interval '3 hours',
		finished_at = now() - interval '30 minutes' WHERE id = $1`, recent); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(e.ctx, `UPDATE orders SET submitted_at = now() - interval '2 hours' WHERE id = $1`, queuedOld); err != nil {
		t.Fatal(err)
	}
	// Rejections are kept as long as orders.
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO rejections (at, status, code, reason) VALUES
		(now() - interval '2 hours', 401, 'unauthenticated', 'old'), (now(), 401, 'unauthenticated', 'recent')`); err != nil {
		t.Fatal(err)
	}
	// A runbook delegation whose order was never recorded (its API
	// stopped between the two inserts), made long ago, goes; one whose
	// order exists, and a recent one without, stay.
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO runbook_delegations (sha256, order_id, principal, kind, correlation_id, stack, hosts, created_at) VALUES
		('\x01', gen_random_uuid(), 'alice', 'token', 'c', '{}', '{}', now() - interval '2 hours'),
		('\x02', gen_random_uuid(), 'alice', 'token', 'c', '{}', '{}', now()),
		('\x03', $1, 'alice', 'token', 'c', '{}', '{}', now() - interval '2 hours')`, queuedOld); err != nil {
		t.Fatal(err)
	}
	// Maintenance switches go with the refusals they explain (hB14: the
	// log was never trimmed).
	if _, err := e.pool.Exec(e.ctx, `INSERT INTO host_maintenance_log (host, at, by, action, reason) VALUES
		('h1', now() - interval '2 hours', 'root', 'on', 'old'), ('h1', now(), 'root', 'off', 'recent')`); err != nil {
		t.Fatal(err)
	}
	n, err := e.svc.Prune(e.ctx)
	if err != nil || n != 4 {
		t.Fatalf("prune: %d %v, want 4 (an order, a rejection, an orphan delegation and a maintenance switch)", n, err)
	}
	if e.count(`SELECT count(*) FROM host_maintenance_log WHERE reason = 'old'`) != 0 || e.count(`SELECT count(*) FROM host_maintenance_log WHERE reason = 'recent'`) != 1 {
		t.Fatal("retention kept the old maintenance switch or deleted the recent one")
	}
	if e.count(`SELECT count(*) FROM runbook_delegations WHERE sha256 = '\x01'`) != 0 || e.count(`SELECT count(*) FROM runbook_delegations`) != 2 {
		t.Fatal("retention kept the old orphan delegation or deleted another")
	}
	if e.count(`SELECT count(*) FROM rejections WHERE reason = 'old'`) != 0 || e.count(`SELECT count(*) FROM rejections WHERE reason = 'recent'`) != 1 {
		t.Fatal("retention kept the old rejection or deleted the recent one")
	}
	if e.count(`SELECT count(*) FROM orders WHERE id = $1`, old) != 0 || e.count(`SELECT count(*) FROM order_events WHERE order_id = $1`, old) != 0 {
		t.Fatal("the old finished order or its events survived")
	}
	if e.count(`SELECT count(*) FROM orders WHERE id = ANY($1)`, []uuid.UUID{recent, queuedOld}) != 2 {
		t.Fatal("a recent or unfinished order was deleted")
	}
}

// TestDropEndedOfUnservedHost: a host no worker serves kept the message of
// every order canceled or expired there in the orders stream for good
// (only a worker's ack removes one). DropEnded removes those of ended
// orders, in front of a queued order and behind it, keeps the queued
// ones, and leaves a host with a live worker to it.
func TestDropEndedOfUnservedHost(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	submit := func(host string) uuid.UUID {
		t.Helper()
		o, err := e.svc.Submit(e.ctx, alice, newOrder(host, "true"))
		if err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	cancel := func(id uuid.UUID) {
		t.Helper()
		if ok, err := e.store.Cancel(e.ctx, id, "test", "canceled by the test"); err != nil || !ok {
			t.Fatalf("cancel %s: %v, %v", id, ok, err)
		}
	}
	gone := []uuid.UUID{submit("hgone"), submit("hgone"), submit("hgone"), submit("hgone")}
	live := submit("hlive")
	for _, id := range []uuid.UUID{gone[0], gone[1], gone[3], live} {
		cancel(id)
	}
	if err := e.q.Heartbeat(e.ctx, queue.HostInfo{Host: "hlive", Instance: "test", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}

	n, err := e.svc.DropEnded(e.ctx)
	if err != nil || n != 3 {
		t.Fatalf("DropEnded = %d, %v; want the 3 canceled orders, before and behind the queued one", n, err)
	}
	if got := e.queued("hgone"); len(got) != 1 || got[0] != gone[2] {
		t.Fatalf("hgone's subject holds %v, want only the queued order %s", got, gone[2])
	}
	if got := e.queued("hlive"); len(got) != 1 || got[0] != live {
		t.Fatalf("hlive's subject holds %v, want its worker to take %s", got, live)
	}

	later := submit("hgone")
	cancel(gone[2])
	if n, err := e.svc.DropEnded(e.ctx); err != nil || n != 1 {
		t.Fatalf("DropEnded = %d, %v after the queued order was canceled; want 1", n, err)
	}
	if got := e.queued("hgone"); len(got) != 1 || got[0] != later {
		t.Fatalf("hgone's subject holds %v, want the order queued since, %s", got, later)
	}
	cancel(later)
	if n, err := e.svc.DropEnded(e.ctx); err != nil || n != 1 {
		t.Fatalf("DropEnded = %d, %v after the last queued order was canceled; want 1", n, err)
	}
	if got := e.queued("hgone"); len(got) != 0 {
		t.Fatalf("hgone's subject still holds %v", got)
	}
}

// cancelingPublisher is the real queue, except that it cancels the
// submitting client's context just before it publishes: the client left
// once its order was recorded (a ?wait given up, a closed connection).
type cancelingPublisher struct {
	*queue.Queue
	leave context.CancelFunc
}

func (p *cancelingPublisher) Publish(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
	p.leave()
	return p.Queue.Publish(ctx, host, id)
}

// TestClientLeavingAfterInsertStillPublishes: an order recorded for a
// client that then went away is published at once, in its place in its
// host's queue. Cut short by the client's context, it waited for the
// reconciler (10 s) and ran after the host's later orders, and the API
// logged a bus failure that never happened.
func TestClientLeavingAfterInsertStillPublishes(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{})
	clientCtx, leave := context.WithCancel(e.ctx)
	pol, err := policy.New([]config.Rule{{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"h*"}, Allow: []string{`^true$`}}})
	if err != nil {
		t.Fatal(err)
	}
	svc := intake.New(e.store, &cancelingPublisher{Queue: e.q, leave: leave}, func() intake.Authorizer { return pol },
		intake.Options{}, testenv.Logger(t))
	o, err := svc.Submit(clientCtx, alice, newOrder("h1", "true"))
	if err != nil {
		t.Fatalf("submit whose client left after the insert: %v", err)
	}
	if got := e.queued("h1"); len(got) != 1 || got[0] != o.ID {
		t.Fatalf("h1's subject holds %v, want the recorded order %s", got, o.ID)
	}
}

// TestEndLostEndsAPurgedQueueInOneRun: a purge takes a host's whole queue
// with it, and one run of the search ends all of it, not only the oldest
// batch it looks at per host (lostPerHost, 200): one batch a minute left
// the rest of a long purged queue queued for many minutes more.
func TestEndLostEndsAPurgedQueueInOneRun(t *testing.T) {
	e := newIntakeEnv(t, intake.Options{LostAfter: time.Millisecond, LostEvery: time.Hour})
	ctx, stop := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.svc.Run(ctx) }() // clears the publish marks; its own search waits an hour
	t.Cleanup(func() { stop(); <-done })
	const purged = 450
	for range purged {
		if _, err := e.svc.Submit(e.ctx, alice, newOrder("hpurge", "true")); err != nil {
			t.Fatal(err)
		}
	}
	kept, err := e.svc.Submit(e.ctx, alice, newOrder("hkeep", "true"))
	if err != nil {
		t.Fatal(err)
	}
	// The publish marks are cleared in the background: the search looks
	// only at orders known to have been published.
	testenv.WaitUntil(t, 10*time.Second, "the publishes marked", func() bool {
		return e.count(`SELECT count(*) FROM unpublished`) == 0
	})
	st, err := e.q.JetStream().Stream(e.ctx, queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(e.ctx, jetstream.WithPurgeSubject(queue.OrdersSubject+"hpurge")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // older than LostAfter
	n, err := e.svc.EndLost(e.ctx)
	if err != nil || n != purged {
		t.Fatalf("EndLost = %d, %v; want all %d purged orders ended in one run", n, err, purged)
	}
	if q := e.count(`SELECT count(*) FROM orders WHERE host = 'hpurge' AND status = 'queued'`); q != 0 {
		t.Fatalf("%d purged orders still queued", q)
	}
	if st := e.count(`SELECT count(*) FROM orders WHERE id = $1 AND status = 'queued'`, kept.ID); st != 1 {
		t.Fatalf("the order whose message is there is no longer queued")
	}
}
