package postgres_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// historyTables grow with every order kept: a statement of the per-order
// paths or of a periodic job that scans one of them costs the history.
var historyTables = map[string]bool{"orders": true, "order_events": true, "order_processes": true,
	"cancel_requests": true, "rejections": true}

// TestStatementsReadNoHistory runs what one order and every periodic job
// ask of the store on a month of history, with auto_explain sending the
// plan of every statement they run (the triggers' and the foreign keys'
// included) back to the session, and refuses any that reads a history
// table from end to end. docs/benchmarks.md ("History at 1M orders") has
// the same statements at 1M orders.
func TestStatementsReadNoHistory(t *testing.T) {
	ctx := testenv.Context(t)
	e, log := explainedStore(t, ctx, 0, `SET auto_explain.log_nested_statements = on;`)

	// A month of finished orders on ten hosts, as the pipeline leaves
	// them: three events, a process record, a tenth canceled while they
	// ran; and a month of refused requests.
	e.exec(`WITH o AS (
	INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at, started_at, finished_at, attempt, worker, exit_code)
	SELECT gen_random_uuid(), 'web-' || i % 10, CASE WHEN i % 10 = 0 THEN 'killed' ELSE 'succeeded' END, 'true', 60000, 'alice',
		t, t, t + interval '1 s', 1, 'web-' || i % 10 || '/w0', 0
	FROM (SELECT i, now() - interval '30 days' + i * interval '2 min' AS t FROM generate_series(1, 20000) i) s
	RETURNING id, host, status, submitted_at AS t),
	e AS (INSERT INTO order_events (order_id, at, type, status, actor)
		SELECT id, t, ty, st, 'w0' FROM o, (VALUES ('submitted', 'queued'), ('started', 'running'), ('finished', 'succeeded')) v(ty, st)),
	p AS (INSERT INTO order_processes (order_id, attempt, worker, pid, pgid, start_time, boot_id, started_at, last_seen)
		SELECT id, 1, host || '/w0', 100, 100, 1, 'boot', t, t FROM o)
	INSERT INTO cancel_requests (order_id, host, actor, signal, requested_at)
	SELECT id, host, 'alice', 'SIGTERM', t FROM o WHERE status = 'killed'`)
	e.exec(`INSERT INTO rejections (at, status, code, reason)
	SELECT now() - interval '30 days' + i * interval '2 min', 403, 'forbidden', 'no' FROM generate_series(1, 20000) i`)
	for _, table := range []string{"orders", "order_events", "order_processes", "cancel_requests", "rejections"} {
		e.exec(`ANALYZE ` + table)
	}
	log.reset()

	// One order's life, a cancel, and every periodic job.
	e.own("web-1", "w1")
	run := e.insert("web-1", "alice", nil)
	call := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err := e.store.Unpublished(ctx, 0, 500)
	call("unpublished", err)
	call("mark published", e.store.MarkPublished(ctx, []uuid.UUID{run.ID}))
	_, err = e.store.ForgetStarted(ctx)
	call("forget started", err)
	c := e.claim(run.ID, "w1")
	call("record process", e.store.RecordProcess(ctx, run.ID, c.Attempt, "w1",
		postgres.Process{PID: 1, PGID: 1, Worker: "w1", StartedAt: time.Now()}))
	_, err = e.store.RequestCancel(ctx, run.ID, "alice", "SIGTERM")
	call("request cancel", err)
	call("complete", e.store.Complete(ctx, run.ID, c.Attempt, succeeded("done\n")))
	_, err = e.store.GetOrder(ctx, run.ID)
	call("get order", err)
	_, err = e.store.Events(ctx, run.ID)
	call("events", err)
	_, err = e.store.CancelRequestOf(ctx, run.ID)
	call("cancel request of", err)
	_, err = e.store.GetOrderLean(ctx, run.ID)
	call("get order lean", err)
	keyed := e.insert("web-1", "alice", func(o *order.Order) { o.IdempotencyKey = "k1" })
	again := *keyed
	again.ID = order.NewID()
	prev, err := e.store.InsertOrder(ctx, &again)
	call("idempotent repeat", err)
	if prev == nil || prev.ID != keyed.ID {
		t.Fatalf("the repeat of %s found %v", keyed.ID, prev)
	}
	next := e.insert("web-1", "alice", nil)
	kc := e.claim(keyed.ID, "w1")
	_, err = e.store.CompleteAndClaim(ctx, keyed.ID, kc.Attempt, succeeded(""), next.ID, "w1", 3)
	call("complete and claim", err)
	call("record process", e.store.RecordProcess(ctx, next.ID, 1, "w1",
		postgres.Process{PID: 2, PGID: 2, Worker: "w1", StartedAt: time.Now()}))
	call("touch process", e.store.TouchProcess(ctx, next.ID, 1))
	_, err = e.store.ProcessOf(ctx, next.ID, 1)
	call("process of", err)
	_, err = e.store.InterruptAttempt(ctx, next.ID, 1, "w1", "its worker is gone", nil)
	call("interrupt", err)
	_, err = e.store.QueueDepth(ctx, "web-1")
	call("queue depth", err)
	call("rejection", e.store.RecordRejection(ctx, postgres.Rejection{Status: 403, Code: "forbidden", Reason: "no"}))
	call("touch host", e.store.TouchHost(ctx, "web-2", "test", "w9"))
	_, _, _, err = e.store.ForgetHost(ctx, "web-2", "")
	call("forget host", err)
	queued := e.insert("web-1", "alice", nil)
	_, err = e.store.Cancel(ctx, queued.ID, "alice", "canceled")
	call("cancel queued", err)
	_, err = e.store.ExpireDue(ctx, 500)
	call("expire due", err)
	_, err = e.store.QueuedPublishedOlderThan(ctx, 0, 200)
	call("queued published", err)
	_, err = e.store.ActiveCounts(ctx, []string{"web-1"})
	call("active counts", err)
	_, _, err = e.store.Ended(ctx, []uuid.UUID{run.ID, queued.ID})
	call("ended", err)
	_, err = e.store.QueueDepths(ctx)
	call("queue depths", err)
	_, err = e.store.CurrentOrders(ctx)
	call("current orders", err)
	_, err = e.store.QueueAges(ctx)
	call("queue ages", err)
	_, _, err = e.store.UnpublishedBacklog(ctx)
	call("unpublished backlog", err)
	_, err = e.store.Hosts(ctx)
	call("hosts", err)
	call("touch host", e.store.TouchHost(ctx, "web-1", "test", "w1"))
	_, err = e.store.RunningOrders(ctx, "web-1")
	call("running orders", err)
	_, err = e.store.UnreapedAttempts(ctx, "web-1")
	call("unreaped attempts", err)
	_, _, err = e.store.LastClaimed(ctx, "web-1")
	call("last claimed", err)
	cutoff := time.Now().Add(-29 * 24 * time.Hour)
	n, err := e.store.DeleteFinishedBefore(ctx, cutoff, 1000)
	call("retention: orders", err)
	if n == 0 {
		t.Fatal("retention deleted no order: the plans below did not cascade")
	}
	_, err = e.store.DeleteRejectionsBefore(ctx, cutoff, 1000)
	call("retention: rejections", err)
	_, err = e.store.DeleteOrphanDelegationsBefore(ctx, cutoff, 1000)
	call("retention: delegations", err)

	plans := log.taken()
	if len(plans) < 30 {
		t.Fatalf("auto_explain sent %d plans: it is not observing the store", len(plans))
	}
	for _, p := range plans {
		var ex struct {
			Query string         `json:"Query Text"`
			Plan  map[string]any `json:"Plan"`
		}
		if err := json.Unmarshal([]byte(p), &ex); err != nil {
			t.Fatalf("plan %q: %v", p, err)
		}
		var walk func(n map[string]any)
		walk = func(n map[string]any) {
			if rel, _ := n["Relation Name"].(string); n["Node Type"] == "Seq Scan" && historyTables[rel] {
				t.Errorf("reads all of %s: %s", rel, strings.Join(strings.Fields(ex.Query), " "))
			}
			kids, _ := n["Plans"].([]any)
			for _, k := range kids {
				walk(k.(map[string]any))
			}
		}
		walk(ex.Plan)
	}
}

// planLog holds the plans auto_explain sent a store's connections.
type planLog struct {
	mu    sync.Mutex
	plans []string
}

func (l *planLog) reset() { l.mu.Lock(); l.plans = nil; l.mu.Unlock() }

// taken returns the plans sent since the last reset.
func (l *planLog) taken() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.plans)
}

// explainedStore is a store on the test database whose every statement's
// plan auto_explain sends back as a notice (JSON), kept in the log;
// settings adds auto_explain settings, maxConns (0: the default) bounds
// the pool.
func explainedStore(t *testing.T, ctx context.Context, maxConns int32, settings string) (*storeEnv, *planLog) {
	t.Helper()
	log := &planLog{}
	pool, err := postgres.OpenTweaked(ctx, testenv.Postgres(t), func(cfg *pgxpool.Config) {
		if maxConns > 0 {
			cfg.MaxConns = maxConns
		}
		cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			if _, plan, ok := strings.Cut(n.Message, "plan:"); ok {
				log.mu.Lock()
				log.plans = append(log.plans, plan)
				log.mu.Unlock()
			}
		}
		connected := cfg.AfterConnect
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			if err := connected(ctx, c); err != nil {
				return err
			}
			_, err := c.Exec(ctx, `LOAD 'auto_explain';
				SET auto_explain.log_min_duration = 0; SET auto_explain.log_level = notice;
				SET auto_explain.log_format = json; `+settings)
			return err
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &storeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool)}, log
}
