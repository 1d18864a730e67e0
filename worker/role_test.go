package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
	"github.com/orderly-run/orderly/worker"
)

// TestWorkerRunsAsTheDocumentedRole runs a real worker through an order's
// whole life twice: connected as orderly's own role, then as a login of the
// orderly_worker role that docs/sql.md documents (its SQL applied
// verbatim). Every order must end the same way under both: a worker that
// needs a right the page does not give fails here.
// The third run lists the login in worker_logins for the worker's host
// (row security, migration 00012), as a per-host login is.
func TestWorkerRunsAsTheDocumentedRole(t *testing.T) {
	for _, role := range []string{"owner", "orderly_worker", "orderly_worker of one host"} {
		t.Run(role, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			admin, pool := testenv.Store(t, dsn)
			ws := admin
			switch role {
			case "orderly_worker":
				ws, _ = workerRole(t, pool, dsn)
			case "orderly_worker of one host":
				ws, _ = workerRole(t, pool, dsn, "role-1")
			}
			workerLifecycle(t, admin, pool, ws)
		})
	}
}

// TestCheckLoginRefusesARoleThatCannotClaim: a worker role that cannot
// read what a claim reads (a role made under another name than
// orderly_worker before migration 00023, which grants to that name only)
// is refused at the worker's start, naming what it lacks and what to run.
// It took its host and failed every claim with `permission denied`
// (hJ8's rolling upgrade, a fleet's role of its own name).
func TestCheckLoginRefusesARoleThatCannotClaim(t *testing.T) {
	dsn := testenv.Postgres(t)
	_, pool := testenv.Store(t, dsn)
	ws, _ := workerRole(t, pool, dsn, "mine")
	ctx := t.Context()
	if err := ws.CheckLogin(ctx, "mine"); err != nil {
		t.Fatalf("CheckLogin of the documented role: %v", err)
	}
	for _, q := range []string{`REVOKE SELECT (waiter) ON orders FROM orderly_worker`, `REVOKE SELECT ON api_presence FROM orderly_worker`} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	err := ws.CheckLogin(ctx, "mine")
	if err == nil || !strings.Contains(err.Error(), "cannot read api_presence.instance, api_presence.alive_until, orders.waiter") || !strings.Contains(err.Error(), "A role for workers") {
		t.Errorf("CheckLogin of a role without 00023's grants: %v, want it refused naming api_presence, orders.waiter and sql.md's block", err)
	}
	// 00025's: what tells a sub-runbook's claim that its parent run ended.
	for _, q := range []string{`REVOKE SELECT (parent_run) ON orders FROM orderly_worker`, `REVOKE SELECT (order_id) ON runbook_delegations FROM orderly_worker`} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	err = ws.CheckLogin(ctx, "mine")
	if err == nil || !strings.Contains(err.Error(), "cannot read api_presence.instance, api_presence.alive_until, orders.waiter, orders.parent_run, runbook_delegations.order_id") {
		t.Errorf("CheckLogin of a role without 00025's grants: %v, want it refused naming orders.parent_run and runbook_delegations.order_id", err)
	}
}

// TestWorkerLoginSeesOnlyItsHost: a login listed in worker_logins for one
// host reads and writes nothing of another host's, through its worker (a
// forged message naming another host's order runs nothing) or directly,
// and `orderly worker` refuses to start with it for another host.
func TestWorkerLoginSeesOnlyItsHost(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, wp := workerRole(t, pool, dsn, "mine")
	ctx := t.Context()
	e := &env{t: t, store: admin, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}

	// Another host's order, running there, with a process record, a
	// cancel request and events.
	other := e.submit("other", "true")
	if _, _, err := admin.TakeHost(ctx, "other", "test", postgres.Owner{Instance: "theirs"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := admin.Claim(ctx, other, "theirs", 1); err != nil || !claimed {
		t.Fatalf("claim as the other host's worker: %v %v", claimed, err)
	}
	if err := admin.RecordProcess(ctx, other, 1, "theirs", postgres.Process{PID: 1, PGID: 1, BootID: "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RequestCancel(ctx, other, "test", "SIGTERM"); err != nil {
		t.Fatal(err)
	}

	if err := ws.CheckLogin(ctx, "mine"); err != nil {
		t.Errorf("CheckLogin of its own host: %v", err)
	}
	if err := ws.CheckLogin(ctx, "other"); err == nil || !strings.Contains(err.Error(), "hosts mine only") {
		t.Errorf("CheckLogin of another host: %v, want it refused naming the login's host", err)
	}
	if err := admin.CheckLogin(ctx, "other"); err != nil {
		t.Errorf("CheckLogin of orderly's own role: %v", err)
	}

	// Its worker runs its own host's orders and drops a message on its
	// subject that names the other host's order.
	runWorker(t, worker.Options{Host: "mine", Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
		ShutdownGrace: 5 * time.Second}, ws, e.q, testenv.Logger(t))
	if _, err := e.q.Publish(ctx, "mine", other); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(e.submit("mine", "true"), order.StatusSucceeded)

	// What orderly's role sees of the other host, the login does not.
	for _, q := range []string{
		`SELECT count(*) FROM orders WHERE host = 'other'`,
		`SELECT count(*) FROM active_orders WHERE host = 'other'`,
		`SELECT count(*) FROM hosts WHERE host = 'other'`,
		`SELECT count(*) FROM cancel_requests WHERE host = 'other'`,
		`SELECT count(*) FROM order_processes WHERE order_id = '` + other.String() + `'`,
		`SELECT count(*) FROM order_events WHERE order_id = '` + other.String() + `'`,
	} {
		var all, seen int
		if err := pool.QueryRow(ctx, q).Scan(&all); err != nil || all == 0 {
			t.Fatalf("as orderly's role, %s: %d %v", q, all, err)
		}
		if err := wp.QueryRow(ctx, q).Scan(&seen); err != nil || seen != 0 {
			t.Errorf("as the login of mine, %s: %d rows (%v), want none", q, seen, err)
		}
	}
	for _, q := range []string{
		`UPDATE orders SET status = 'succeeded', exit_code = 0 WHERE host = 'other'`,
		`UPDATE hosts SET owner = 'mine' WHERE host = 'other'`,
		`UPDATE order_processes SET last_seen = now() WHERE order_id = '` + other.String() + `'`,
	} {
		if tag, err := wp.Exec(ctx, q); err != nil || tag.RowsAffected() != 0 {
			t.Errorf("as the login of mine, %s: %d rows (%v), want none", q, tag.RowsAffected(), err)
		}
	}
	for _, q := range []string{
		`INSERT INTO order_events (order_id, type, status, actor) VALUES ('` + other.String() + `', 'finished', 'succeeded', 'x')`,
		`INSERT INTO order_processes (order_id, attempt, worker, pid, pgid, start_time, boot_id)
			VALUES ('` + other.String() + `', 2, 'x', 1, 1, 0, 'b')`,
		`INSERT INTO hosts (host, instance) VALUES ('new-host', 'x')`,
	} {
		if _, err := wp.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "row-level security") {
			t.Errorf("as the login of mine, %s: %v, want refused by row security", q, err)
		}
	}
	// The login is a member of orderly_worker, which no row names: it may
	// SET ROLE to it and must stay confined.
	conn, err := wp.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	if _, err := conn.Exec(ctx, `SET ROLE orderly_worker`); err != nil {
		t.Fatal(err)
	} else if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders WHERE host = 'other'`).Scan(&seen); err != nil || seen != 0 {
		t.Errorf("as the login of mine after SET ROLE orderly_worker: %d of the other host's orders (%v), want none", seen, err)
	}
	_ = conn.Hijack().Close(ctx) // not back to the pool in orderly_worker
	if _, _, err := ws.TakeHost(ctx, "other", "test", postgres.Owner{Instance: "mine-worker"}); err == nil {
		t.Error("the login of mine took the other host over")
	}
	o, err := admin.GetOrder(ctx, other)
	if err != nil || o.Status != order.StatusRunning || o.Worker != "theirs" || o.Attempt != 1 {
		t.Fatalf("the other host's order after it all: %+v %v", o, err)
	}
	var owner string
	if err := pool.QueryRow(ctx, `SELECT owner FROM hosts WHERE host = 'other'`).Scan(&owner); err != nil || owner != "theirs" {
		t.Errorf("the other host's owner = %q (%v)", owner, err)
	}
}

// TestWorkerLoginCannotHijackWorkerLoginHosts: where workers may create
// in the schema (PUBLIC could, before PostgreSQL 15), a listed login that
// adds an aggregate array_agg(text), a closer match than the catalog's
// array_agg(anynonarray), does not get it run with the rights of
// worker_login_hosts's owner.
func TestWorkerLoginCannotHijackWorkerLoginHosts(t *testing.T) {
	dsn := testenv.Postgres(t)
	_, pool := testenv.Store(t, dsn)
	_, wp := workerRole(t, pool, dsn, "mine")
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `GRANT CREATE ON SCHEMA public TO orderly_worker`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE FUNCTION public.unlist(text[], text) RETURNS text[] LANGUAGE sql AS 'DELETE FROM worker_logins RETURNING NULL::text[]'`,
		`CREATE AGGREGATE public.array_agg(text) (sfunc = public.unlist, stype = text[])`,
	} {
		if _, err := wp.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// What every policy calls, and anyone may.
	if _, err := wp.Exec(ctx, `SELECT worker_login_hosts(current_user)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM worker_logins`).Scan(&n); err != nil || n != 1 {
		t.Errorf("worker_logins after the login's aggregate: %d rows (%v), want 1", n, err)
	}
}

// TestWorkerLoginLearnsNoOtherLoginsHosts: worker_login_hosts, which every
// policy calls and any role may, tells a login its own hosts (and those of
// a role it may SET ROLE to) but not another login's: a worker's login
// does not learn the fleet's host names through it.
func TestWorkerLoginLearnsNoOtherLoginsHosts(t *testing.T) {
	dsn := testenv.Postgres(t)
	_, pool := testenv.Store(t, dsn)
	_, wp := workerRole(t, pool, dsn, "mine")
	ctx := t.Context()
	other := fmt.Sprintf("orderly_worker_o%d", time.Now().UnixNano())
	for _, q := range []string{
		"CREATE ROLE " + other + " LOGIN IN ROLE orderly_worker",
		"INSERT INTO worker_logins (login, host) VALUES ('" + other + "', 'theirs')",
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP ROLE "+other); err != nil {
			t.Errorf("drop %s: %v", other, err)
		}
	})
	hosts := func(q string) []string {
		t.Helper()
		var h []string
		if err := wp.QueryRow(ctx, q).Scan(&h); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return h
	}
	if h := hosts(`SELECT worker_login_hosts(current_user)`); len(h) != 1 || h[0] != "mine" {
		t.Errorf("the login's own hosts: %q, want [mine]", h)
	}
	if h := hosts(`SELECT worker_login_hosts('` + other + `')`); h != nil {
		t.Errorf("another login's hosts, asked by a worker's login: %q, want none", h)
	}
}

// TestWorkerLoginListsNoOtherRunbookRuns: a login listed for one host
// reads no delegation but those of the runs its own queued orders wait
// for as sub-runbooks (migration 00027), and of the API processes'
// presence only what a claim reads: before, it listed the id of every
// runbook run live on every host (SELECT (order_id) on
// runbook_delegations, 00025) and every API's hostname and pid. Its
// claims still tell a live parent from an ended one and a present waiter
// from a gone one.
func TestWorkerLoginListsNoOtherRunbookRuns(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, wp := workerRole(t, pool, dsn, "mine")
	ctx := t.Context()
	insert := func(host string, mod func(*order.Order)) *order.Order {
		t.Helper()
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true",
			Timeout: time.Minute, Principal: "alice", Source: "rest"}
		if mod != nil {
			mod(o)
		}
		if _, err := admin.InsertOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	// Three runs on another host, each holding its delegation: the first
	// waits for a child on mine, the second for one on a third host, the
	// third for none.
	if _, _, err := admin.TakeHost(ctx, "other", "test", postgres.Owner{Instance: "theirs"}); err != nil {
		t.Fatal(err)
	}
	var runs []*order.Order
	for i := range 3 {
		run := insert("other", func(o *order.Order) { o.Kind, o.Command = order.KindScript, fmt.Sprintf("runbook:P%d.md", i) })
		if err := admin.InsertDelegation(ctx, "orderly-rb-test-"+run.ID.String(), postgres.Delegation{OrderID: run.ID,
			Principal: "alice", Kind: "token", CorrelationID: "c", Stack: []string{"P.md"}, Hosts: []string{"other"}}); err != nil {
			t.Fatal(err)
		}
		if _, claimed, err := admin.Claim(ctx, run.ID, "theirs", 1); err != nil || !claimed {
			t.Fatalf("claim run %d: %v %v", i, claimed, err)
		}
		runs = append(runs, run)
	}
	child := func(host string, parent *order.Order) *order.Order {
		return insert(host, func(o *order.Order) {
			o.Kind, o.Command, o.Source, o.ParentRun = order.KindScript, "runbook:C.md", "runbook", parent.ID
		})
	}
	live := child("mine", runs[0])
	child("third", runs[1])

	ids := func(p *pgxpool.Pool) []string {
		t.Helper()
		var got []string
		if err := p.QueryRow(ctx, `SELECT coalesce(array_agg(order_id::text ORDER BY order_id), '{}') FROM runbook_delegations`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := ids(pool); len(got) != 3 {
		t.Fatalf("orderly's role reads %d delegations, want 3", len(got))
	}
	if got := ids(wp); len(got) != 1 || got[0] != runs[0].ID.String() {
		t.Errorf("the login of mine reads the delegations of %q, want only the run its queued child waits for (%s)", got, runs[0].ID)
	}

	// The API processes' presence: what the claim reads, nothing more.
	present, gone := postgres.Presence{Instance: uuid.New(), Hostname: "api-1", PID: 41}, uuid.New()
	if err := admin.RenewPresence(ctx, present, time.Minute); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := wp.QueryRow(ctx, `SELECT count(*) FROM api_presence WHERE alive_until > now() AND instance IS NOT NULL`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the login of mine reads api_presence's instance and alive_until: %d rows (%v), want 1", n, err)
	}
	for _, q := range []string{`SELECT hostname FROM api_presence`, `SELECT pid FROM api_presence`, `SELECT * FROM api_presence`} {
		if _, err := wp.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("as the login of mine, %s: %v, want permission denied", q, err)
		}
	}

	// Its claims: a child whose run is live starts, one whose run ended
	// is canceled saying so, an order whose waiter is present starts,
	// one whose waiter is gone is canceled saying so.
	if err := ws.CheckLogin(ctx, "mine"); err != nil {
		t.Fatalf("CheckLogin: %v", err)
	}
	if _, _, err := ws.TakeHost(ctx, "mine", "test", postgres.Owner{Instance: "w"}); err != nil {
		t.Fatal(err)
	}
	attempt := 0
	claim := func(o *order.Order) error {
		t.Helper()
		attempt++
		_, claimed, err := ws.Claim(ctx, o.ID, "w", uint64(attempt))
		if err == nil && !claimed {
			t.Fatalf("claim of %s: not claimed, no error", o.ID)
		}
		return err
	}
	if err := claim(live); err != nil {
		t.Errorf("claim of the child of a live run: %v", err)
	}
	ended := child("mine", runs[0])
	if _, err := pool.Exec(ctx, `UPDATE orders SET status = 'interrupted', finished_at = now() WHERE id = $1`, runs[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := claim(ended); !errors.Is(err, postgres.ErrWaiterGone) {
		t.Errorf("claim of the child of an ended run: %v, want ErrWaiterGone", err)
	}
	if ok, reason, err := ws.CancelWaiterGone(ctx, ended.ID, "w"); !ok || err != nil || reason != postgres.ParentEndedReason {
		t.Errorf("cancel of the child of an ended run: %v %q %v", ok, reason, err)
	}
	if err := claim(insert("mine", func(o *order.Order) { o.Waiter = present.Instance })); err != nil {
		t.Errorf("claim of an order whose waiter is present: %v", err)
	}
	if err := claim(insert("mine", func(o *order.Order) { o.Waiter = gone })); !errors.Is(err, postgres.ErrWaiterGone) {
		t.Errorf("claim of an order whose waiter is gone: %v, want ErrWaiterGone", err)
	}
}

// TestMigrationNarrowsAWorkerRoleMadeBefore: a worker role made on an
// older schema (00023 gave it api_presence whole) reads only instance and
// alive_until once migration 00027 is applied, its login still passes
// CheckLogin, and the migration's down gives the table back, as an older
// worker's CheckLogin wants it.
func TestMigrationNarrowsAWorkerRoleMadeBefore(t *testing.T) {
	dsn := testenv.Postgres(t)
	_, pool := testenv.Store(t, dsn)
	ws, wp := workerRole(t, pool, dsn, "mine")
	ctx := t.Context()
	p, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hostname := func() error {
		var n int
		return wp.QueryRow(ctx, `SELECT count(hostname) FROM api_presence`).Scan(&n)
	}
	if _, err := p.DownTo(ctx, 25); err != nil {
		t.Fatal(err)
	}
	if err := hostname(); err != nil {
		t.Fatalf("on schema 25, the role reads api_presence whole: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hostname(); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("after migrate up, a hostname of api_presence: %v, want permission denied", err)
	}
	if err := ws.CheckLogin(ctx, "mine"); err != nil {
		t.Errorf("CheckLogin after migrate up: %v", err)
	}
}

// TestWorkerRoleIsRefused: a login of the orderly_worker role can neither
// add an order (for any host) nor mark one for publishing, nor rewrite what
// an order runs or where, nor read tokens and delegations, nor create in
// the schema where PUBLIC could.
func TestWorkerRoleIsRefused(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	// PostgreSQL 14's default, which a database upgraded from it keeps:
	// every role may create in public.
	if _, err := pool.Exec(t.Context(), `GRANT CREATE ON SCHEMA public TO PUBLIC`); err != nil {
		t.Fatal(err)
	}
	_, wp := workerRole(t, pool, dsn)
	e := &env{t: t, store: admin, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	id := e.submit("victim", "true")
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO orders (id, host, command, principal) VALUES ('%s', 'victim', 'sh', 'x')`, uuid.New()),
		fmt.Sprintf(`INSERT INTO unpublished (id, submitted_at) VALUES ('%s', now())`, id),
		`UPDATE orders SET command = 'sh'`, `UPDATE orders SET args = args`, `UPDATE orders SET host = 'other'`,
		`UPDATE orders SET env = '{"LD_PRELOAD": "/tmp/x.so"}'`, `UPDATE orders SET stdin = 'forged'`,
		`UPDATE orders SET script = NULL`, `UPDATE orders SET principal = 'admin'`, `UPDATE orders SET policy = '{}'`,
		`UPDATE orders SET action_params = NULL`, `UPDATE orders SET run_as = 'root'`, `DELETE FROM orders`,
		`SELECT sha256 FROM api_tokens`, `SELECT sha256 FROM runbook_delegations`, `SELECT request_sha256 FROM orders`,
		`SELECT id FROM unpublished`, `SELECT reason FROM rejections`,
		`INSERT INTO rejections (status, code, reason) VALUES (400, 'x', 'y')`,
		`DELETE FROM active_orders`, `UPDATE active_orders SET host = 'other'`, `DELETE FROM order_events`,
		`UPDATE order_events SET actor = 'x'`, `DELETE FROM cancel_requests`, `DELETE FROM hosts`,
		// A better match than the catalog's jsonb_build_object(VARIADIC
		// "any") for a call the API makes (a cancel's event), which would
		// run it with orderly's own rights.
		`CREATE FUNCTION public.jsonb_build_object(text, text, text, integer) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb'`,
	} {
		if _, err := wp.Exec(t.Context(), q); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("as orderly_worker, %s: %v, want permission denied", q, err)
		}
	}
	if o, err := admin.GetOrder(t.Context(), id); err != nil || o.Command != "true" || o.Host != "victim" {
		t.Fatalf("the order after the refused writes: %+v %v", o, err)
	}
}

// TestWorkerRoleRecordsAProcessAgain: the retry of a process record whose
// answer was lost updates the row it finds (ON CONFLICT DO UPDATE), which
// needs a right of its own: the role documented in docs/sql.md has it.
func TestWorkerRoleRecordsAProcessAgain(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, _ := workerRole(t, pool, dsn)
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "again", Command: "true",
		Timeout: time.Minute, Principal: "test", Source: "rest"}
	if _, err := admin.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.TakeHost(t.Context(), "again", "test", postgres.Owner{Instance: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := ws.Claim(t.Context(), o.ID, "w", 1); err != nil || !claimed {
		t.Fatalf("claim as orderly_worker: %v %v", claimed, err)
	}
	p := postgres.Process{PID: 4242, PGID: 4242, StartTime: 9, BootID: "b"}
	for i := range 2 {
		if err := ws.RecordProcess(t.Context(), o.ID, 1, "w", p); err != nil {
			t.Fatalf("record %d as orderly_worker: %v", i+1, err)
		}
	}
}

// TestWorkerRoleRecordsAJobAfterTakeover: a login of the orderly_worker
// role, listed for its host, checks an action's job after it was queued
// (Store.JobAfterTakeover): nothing while the attempt is its own, and a
// job_after_takeover event once another worker took the host and
// interrupted the run.
func TestWorkerRoleRecordsAJobAfterTakeover(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, _ := workerRole(t, pool, dsn, "late")
	ctx := t.Context()
	o := claimedAsWorker(t, ctx, admin, ws)
	detail := map[string]any{"job_id": 7, "job": "systemd:restart:x.service"}
	if lost, err := ws.JobAfterTakeover(ctx, &postgres.JobCheck{}, o.ID, 1, "w", detail); err != nil || lost {
		t.Fatalf("the job of the worker's own attempt: lost %v, %v", lost, err)
	}
	if _, _, err := ws.TakeHost(ctx, "late", "test", postgres.Owner{Instance: "w2"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := ws.InterruptAttempt(ctx, o.ID, 1, "w2", "taken over", nil); err != nil || !ok {
		t.Fatalf("interrupt as w2: %v %v", ok, err)
	}
	if lost, err := ws.JobAfterTakeover(ctx, &postgres.JobCheck{}, o.ID, 1, "w", detail); err != nil || !lost {
		t.Fatalf("the job after the takeover: lost %v, %v", lost, err)
	}
	evs, err := admin.Events(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	var late []postgres.Event
	for _, ev := range evs {
		if ev.Type == "job_after_takeover" {
			late = append(late, ev)
		}
	}
	if len(late) != 1 || late[0].Actor != "w" || late[0].Status != "" || late[0].Detail["job_id"] != float64(7) || late[0].Detail["attempt"] != float64(1) {
		t.Fatalf("job_after_takeover events %+v, want one by w with the job and the attempt", late)
	}
}

// TestWorkerRoleRecordsAJobAfterTakeoverOnceAcrossACut: the connection
// of a worker's login breaks while it commits a job_after_takeover event
// (held at its COMMIT by a deferred trigger, then cut with the answer on
// its way back, or terminated before the commit), and the worker tries
// again with the same check, as its retry does. After the commit the
// order keeps one event, not two (the try before wrote it and the retry
// reads how that try's transaction ended); before it, the retry records
// it.
func TestWorkerRoleRecordsAJobAfterTakeoverOnceAcrossACut(t *testing.T) {
	for _, committed := range []bool{true, false} {
		name := map[bool]string{true: "after the commit", false: "before the commit"}[committed]
		t.Run(name, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			admin, pool := testenv.Store(t, dsn)
			ws, wp := workerRole(t, pool, dsn, "late")
			ctx := testenv.Context(t)
			// The worker's login through a proxy that can cut its answers.
			var login string
			if err := wp.QueryRow(ctx, `SELECT current_user`).Scan(&login); err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			u.User = url.User(login)
			viaDSN, proxy := testenv.StartPGProxy(t, u.String())
			via, _ := testenv.Store(t, viaDSN)
			// Every insert into order_events waits at its COMMIT for the
			// advisory lock the test holds.
			for _, q := range []string{
				`CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$`,
				`CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON order_events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()`,
			} {
				if _, err := pool.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			o := claimedAsWorker(t, ctx, admin, ws)
			if _, _, err := ws.TakeHost(ctx, "late", "test", postgres.Owner{Instance: "w2"}); err != nil {
				t.Fatal(err)
			}
			if ok, err := ws.InterruptAttempt(ctx, o.ID, 1, "w2", "taken over", nil); err != nil || !ok {
				t.Fatalf("interrupt as w2: %v %v", ok, err)
			}
			lock, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer lock.Release()
			var lockPID uint32
			if err := lock.QueryRow(ctx, `SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock(4242)) l`).Scan(&lockPID); err != nil {
				t.Fatal(err)
			}
			events := func() int {
				t.Helper()
				var n int
				if err := pool.QueryRow(ctx, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'job_after_takeover'`, o.ID).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}

			var check postgres.JobCheck
			detail := map[string]any{"job_id": 7, "job": "systemd:restart:x.service"}
			first := make(chan error, 1)
			go func() {
				_, err := via.JobAfterTakeover(ctx, &check, o.ID, 1, "w", detail)
				first <- err
			}()
			var pid uint32
			testenv.WaitUntil(t, 30*time.Second, "the event's commit waits for the lock", func() bool {
				err := pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, int64(lockPID)).Scan(&pid)
				return err == nil
			})
			if committed {
				proxy.HoldAnswers(pid)
				if _, err := lock.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
					t.Fatal(err)
				}
				testenv.WaitUntil(t, 30*time.Second, "the commit is done, its answer held", func() bool {
					var idle bool
					err := pool.QueryRow(ctx, `SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $1`, int64(pid)).Scan(&idle)
					return err == nil && idle && proxy.AnswerWaiting(pid)
				})
				proxy.Cut(pid)
			} else {
				var ended bool
				if err := pool.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, int64(pid)).Scan(&ended); err != nil || !ended {
					t.Fatalf("backend %d did not end: %v", pid, err)
				}
				if _, err := lock.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-first; err == nil {
				t.Fatal("the try whose connection was cut answered without an error")
			}
			want := map[bool]int{true: 1, false: 0}[committed]
			if n := events(); n != want {
				t.Fatalf("%d events after the cut, want %d", n, want)
			}
			// The worker's retry.
			lost, err := via.JobAfterTakeover(ctx, &check, o.ID, 1, "w", detail)
			if err != nil || !lost {
				t.Fatalf("the retry: lost %v, %v", lost, err)
			}
			if n := events(); n != 1 {
				t.Fatalf("%d job_after_takeover events after the retry, want 1", n)
			}
		})
	}
}

// TestWorkerRoleCancelsAnOrderARestoreBroughtBack: a login of the
// orderly_worker role, listed for its host, may end as canceled a queued
// order of that host, as a worker does with one a restored database holds
// as never claimed below the host's claim mark (replay.go).
func TestWorkerRoleCancelsAnOrderARestoreBroughtBack(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, _ := workerRole(t, pool, dsn, "back")
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "back", Command: "true",
		Timeout: time.Minute, Principal: "test", Source: "rest"}
	if _, err := admin.InsertOrder(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if ok, err := ws.Cancel(t.Context(), o.ID, "w", "restored"); err != nil || !ok {
		t.Fatalf("cancel as orderly_worker: %v %v", ok, err)
	}
	got, err := admin.GetOrder(t.Context(), o.ID)
	if err != nil || got.Status != order.StatusCanceled || got.Result == nil || got.Result.Error != "restored" {
		t.Fatalf("the order after the worker's cancel: %+v %v", got, err)
	}
}

// workerRole applies docs/sql.md's worker role to the database at dsn
// (pool is orderly's own role there) and returns a store and a pool of a
// new login in it, listed in worker_logins for hosts as the page shows
// (none: the login is not listed). Roles are the cluster's: they are
// dropped when the test ends, after every connection of the login closed.
func workerRole(t testing.TB, pool *pgxpool.Pool, dsn string, hosts ...string) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	doc, err := os.ReadFile("../docs/sql.md")
	if err != nil {
		t.Fatal(err)
	}
	var setup []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], "CREATE ROLE orderly_worker NOLOGIN") {
			setup = append(setup, m[1])
		}
	}
	if len(setup) != 1 {
		t.Fatalf("docs/sql.md: %d worker role blocks, want 1", len(setup))
	}
	login := regexp.MustCompile(`(?m)^-- (CREATE ROLE orderly_worker_web3 LOGIN .*IN ROLE orderly_worker;)$`).FindStringSubmatch(setup[0])
	if login == nil {
		t.Fatal("docs/sql.md: the worker role block shows no login")
	}
	name := fmt.Sprintf("orderly_worker_t%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, q := range []string{"DROP OWNED BY " + name + ", orderly_worker", "DROP ROLE " + name, "DROP ROLE orderly_worker"} {
			if _, err := pool.Exec(ctx, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	if _, err := pool.Exec(t.Context(), setup[0]); err != nil {
		t.Fatalf("the worker role of docs/sql.md: %v", err)
	}
	create := strings.NewReplacer("orderly_worker_web3", name, "'…'", "'test'").Replace(login[1])
	if _, err := pool.Exec(t.Context(), create); err != nil {
		t.Fatalf("%s: %v", create, err)
	}
	list := regexp.MustCompile(`(?m)^-- (INSERT INTO worker_logins .*'orderly_worker_web3', 'web-3'.*;)$`).FindStringSubmatch(setup[0])
	if list == nil {
		t.Fatal("docs/sql.md: the worker role block shows no worker_logins row")
	}
	for _, h := range hosts {
		q := strings.NewReplacer("orderly_worker_web3", name, "web-3", h).Replace(list[1])
		if _, err := pool.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	store, wp := testenv.Store(t, u.String())
	var who string
	if err := wp.QueryRow(t.Context(), `SELECT current_user`).Scan(&who); err != nil || who != name {
		t.Fatalf("connected as %q (%v), want %s", who, err, name)
	}
	// What `orderly worker` checks before it starts.
	if err := store.CheckSchema(t.Context()); err != nil {
		t.Fatalf("the schema check as %s: %v", name, err)
	}
	return store, wp
}

// workerLifecycle runs orders of every kind and end through real workers
// of one host that use ws, submitting and cancelling them with admin as
// the API does, and checks how each ended.
func workerLifecycle(t *testing.T, admin *postgres.Store, pool *pgxpool.Pool, ws *postgres.Store) {
	const host = "role-1"
	e := &env{t: t, store: admin, q: testenv.Queue(t, testenv.NATS(t), "test", queue.Options{AckWait: time.Second, LeaseTTL: 2 * time.Second})}
	insert := func(o *order.Order) uuid.UUID {
		t.Helper()
		o.ID, o.Host, o.Principal, o.Source = order.NewID(), host, "test", "rest"
		if o.Kind == "" {
			o.Kind = order.KindExec
		}
		if o.Timeout == 0 {
			o.Timeout = 20 * time.Second
		}
		o.CaptureStdout, o.CaptureStderr = true, true
		if _, err := admin.InsertOrder(t.Context(), o); err != nil {
			t.Fatal(err)
		}
		if _, err := e.q.Publish(t.Context(), host, o.ID); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	start := func(fp func(string, *order.Order) error) <-chan error {
		_, done := runWorker(t, worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: time.Second,
			ShutdownGrace: 5 * time.Second, SweepEvery: 200 * time.Millisecond, FailPoint: fp}, ws, e.q, testenv.Logger(t))
		return done
	}

	// crash waits for a worker's injected crash; one that cannot claim
	// retries and never gets there.
	crash := func(done <-chan error, which string) {
		t.Helper()
		select {
		case err := <-done:
			if !errors.Is(err, errCrash) {
				t.Fatalf("%s worker stopped with %v, want the injected crash", which, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s worker did not reach its crash", which)
		}
	}

	// A first worker dies after claiming an idempotent order: its
	// successor requeues it (once) and runs it.
	requeued := insert(&order.Order{Command: "true", Idempotent: true})
	crashed := start(func(p string, o *order.Order) error {
		if p == "after_claim" && o.ID == requeued {
			return errCrash
		}
		return nil
	})
	crash(crashed, "first")

	// The second dies after running an order, before its result: its
	// successor marks it interrupted and records what it found of its
	// process.
	interrupted := insert(&order.Order{Command: "sh", Args: []string{"-c", "echo left"}})
	crashed = start(func(p string, o *order.Order) error {
		if p == "after_exec" && o.ID == interrupted {
			return errCrash
		}
		return nil
	})
	e.waitStatus(requeued, order.StatusSucceeded)
	crash(crashed, "second")
	start(nil)
	e.waitStatus(interrupted, order.StatusInterrupted)
	testenv.WaitUntil(t, 10*time.Second, "the reaped evidence", func() bool {
		evs, err := admin.Events(t.Context(), interrupted)
		return err == nil && evs[len(evs)-1].Type == "reaped"
	})

	// A compat client's order bound to a live API process runs; one
	// bound to a process that is gone is canceled (the claim reads
	// api_presence and orders.waiter, the cancel writes as the worker).
	live := postgres.Presence{Instance: uuid.New(), Hostname: "api", PID: 1}
	if err := admin.RenewPresence(t.Context(), live, time.Hour); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	ids := map[string]uuid.UUID{
		"bound":       insert(&order.Order{Command: "true", Waiter: live.Instance}),
		"waiter gone": insert(&order.Order{Command: "true", Waiter: uuid.New()}),
		"ok": insert(&order.Order{Command: "sh", Args: []string{"-c", `read l; echo "$A $l"`},
			Env: map[string]string{"A": "env"}, EnvNames: []string{"A"}, Stdin: []byte("stdin\n")}),
		"large":    insert(&order.Order{Command: "head", Args: []string{"-c", "1200000", "/dev/zero"}, MaxOutput: 2 << 20}),
		"timeout":  insert(&order.Order{Command: "sleep", Args: []string{"10"}, Timeout: 300 * time.Millisecond}),
		"expired":  insert(&order.Order{Command: "true", ExpiresAt: &past}),
		"rejected": insert(&order.Order{Command: "no-such-command-here"}),
		"script": insert(&order.Order{Kind: order.KindScript, Command: "runbook:T.md", Source: "runbook",
			Script: &order.Script{Runbook: "T.md", Body: []byte("echo from a runbook\n")}}),
		"cancel": insert(&order.Order{Command: "sleep", Args: []string{"30"}}),
	}
	want := map[string]order.Status{"ok": order.StatusSucceeded, "large": order.StatusSucceeded,
		"bound": order.StatusSucceeded, "waiter gone": order.StatusCanceled,
		"timeout": order.StatusTimedOut, "expired": order.StatusExpired, "rejected": order.StatusRejected,
		"script": order.StatusSucceeded, "cancel": order.StatusKilled}
	e.waitStatus(ids["cancel"], order.StatusRunning)
	if _, err := admin.RequestCancel(t.Context(), ids["cancel"], "test", "SIGTERM"); err != nil {
		t.Fatal(err)
	}
	if err := e.q.SendControl(host, queue.Control{OrderID: ids["cancel"]}); err != nil {
		t.Fatal(err)
	}
	for name, id := range ids {
		o := e.waitStatus(id, want[name])
		if name == "ok" && (o.Result == nil || string(o.Result.Stdout.Content) != "env stdin\n") {
			t.Errorf("ok order's result = %+v", o.Result)
		}
		if name == "large" && (o.Result == nil || o.Result.Stdout.Bytes != 1200000) {
			t.Errorf("large order's result = %+v", o.Result)
		}
	}
	// Terminal orders keep none of their pending inputs.
	var left int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM orders
		WHERE env IS NOT NULL OR stdin IS NOT NULL OR script IS NOT NULL`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d terminal orders keep pending inputs (%v)", left, err)
	}
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM active_orders`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d orders left in active_orders (%v)", left, err)
	}
}

// claimedAsWorker inserts an order for host late (as admin) and claims
// it as the worker login ws, instance w, which takes the host first; ctx
// is the test's (the cut test's carries its deadline).
func claimedAsWorker(t *testing.T, ctx context.Context, admin *postgres.Store, ws *postgres.Store) *order.Order {
	t.Helper()
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "late", Command: "true",
		Timeout: time.Minute, Principal: "test", Source: "rest"}
	if _, err := admin.InsertOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.TakeHost(ctx, "late", "test", postgres.Owner{Instance: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, claimed, err := ws.Claim(ctx, o.ID, "w", 1); err != nil || !claimed {
		t.Fatalf("claim as orderly_worker: %v %v", claimed, err)
	}
	return o
}

// TestWorkerRoleRequeuesAnIdempotentOrderOnce: the takeover's requeue
// as the documented role. An idempotent order handed back unstarted
// (attempt 1) and lost at attempt 2 is requeued, once; a login granted
// before the role could read the events' types (docs/sql.md's older
// block) still requeues a first attempt, as before, and only that: its
// takeover must not fail on the grant it lacks.
func TestWorkerRoleRequeuesAnIdempotentOrderOnce(t *testing.T) {
	dsn := testenv.Postgres(t)
	admin, pool := testenv.Store(t, dsn)
	ws, _ := workerRole(t, pool, dsn)
	ctx := t.Context()
	const host, me = "role-requeue", "w"
	if _, _, err := ws.TakeHost(ctx, host, "test", postgres.Owner{Instance: me}); err != nil {
		t.Fatal(err)
	}
	insert := func() uuid.UUID {
		t.Helper()
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: host, Command: "true", Idempotent: true,
			Timeout: time.Minute, Principal: "test", Source: "rest"}
		if _, err := admin.InsertOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		return o.ID
	}
	claim := func(id uuid.UUID, attempt int) {
		t.Helper()
		if o, claimed, err := ws.Claim(ctx, id, me, 1); err != nil || !claimed || o.Attempt != attempt {
			t.Fatalf("claim of %s: %v %v, want attempt %d", id, claimed, err, attempt)
		}
	}
	requeue := func(id uuid.UUID, attempt int, want bool) {
		t.Helper()
		if ok, err := ws.Requeue(ctx, id, attempt, me, "its worker vanished"); err != nil || ok != want {
			t.Fatalf("requeue of %s at attempt %d: %v %v, want %v", id, attempt, ok, err, want)
		}
	}

	handed := insert()
	claim(handed, 1)
	if ok, err := ws.Unclaim(ctx, handed, 1, me, "the worker is stopping"); err != nil || !ok {
		t.Fatalf("hand-back: %v %v", ok, err)
	}
	claim(handed, 2)
	requeue(handed, 2, true) // never requeued: the hand-back ran nothing
	claim(handed, 3)
	requeue(handed, 3, false) // requeued once already

	if _, err := pool.Exec(ctx, `REVOKE SELECT (order_id, type) ON order_events FROM orderly_worker`); err != nil {
		t.Fatal(err)
	}
	first := insert()
	claim(first, 1)
	requeue(first, 1, true)
	claim(first, 2)
	requeue(first, 2, false)
}
