package postgres_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// TestSQLDocQueriesAsAuditor runs docs/sql.md as an auditor would: the
// auditor role it documents, then every query it shows, as that role, on
// the migrated schema. So a column the page names that does not exist, or
// that the role may not read, fails here; and the role may read no
// pending secret or credential, and write nothing.
func TestSQLDocQueriesAsAuditor(t *testing.T) {
	e := newStoreEnv(t)
	doc, err := os.ReadFile("../../docs/sql.md")
	if err != nil {
		t.Fatal(err)
	}
	var setup, queries []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], "CREATE ROLE orderly_auditor") {
			setup = append(setup, m[1])
			continue
		}
		if strings.Contains(m[1], "CREATE ROLE orderly_worker") {
			continue // worker/role_test.go runs it
		}
		for _, q := range sqlStatements(t, m[1]) {
			// The page's placeholders.
			q = strings.ReplaceAll(q, "'0193…'", "'0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c'")
			queries = append(queries, strings.ReplaceAll(q, "'…'", "''"))
		}
	}
	if len(setup) != 1 || len(queries) < 15 {
		t.Fatalf("docs/sql.md: %d auditor role blocks (want 1), %d queries", len(setup), len(queries))
	}
	e.insert("web-3", "alice", nil)
	// CREATE ROLE is transactional: nothing outlives the test's rollback,
	// and roles are the cluster's, shared by every test database.
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(e.ctx)
	// PostgreSQL 14's default, which a database upgraded from it keeps:
	// every role may create in public.
	if _, err := tx.Exec(e.ctx, `GRANT CREATE ON SCHEMA public TO PUBLIC`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, setup[0]); err != nil {
		t.Fatalf("the auditor role of docs/sql.md: %v", err)
	}
	if _, err := tx.Exec(e.ctx, `SET LOCAL ROLE orderly_auditor`); err != nil {
		t.Fatal(err)
	}
	// try runs q as the auditor, undoing its failure.
	try := func(q string) error {
		sp, err := tx.Begin(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = sp.Exec(e.ctx, q, pgx.QueryExecModeSimpleProtocol)
		if rerr := sp.Rollback(e.ctx); rerr != nil {
			t.Fatal(rerr)
		}
		return err
	}
	for _, q := range queries {
		if err := try(q); err != nil {
			t.Errorf("docs/sql.md query as orderly_auditor: %v\n%s", err, q)
		}
	}
	// Row security (migration 00012) confines listed worker logins only:
	// the auditor sees every row.
	for _, q := range []string{`SELECT count(*) FROM orders WHERE host = 'web-3'`,
		`SELECT count(*) FROM order_events`, `SELECT count(*) FROM active_orders`} {
		var n int
		if err := tx.QueryRow(e.ctx, q).Scan(&n); err != nil || n == 0 {
			t.Errorf("as orderly_auditor, %s: %d (%v), want the rows", q, n, err)
		}
	}
	// Why a compat order was canceled at its claim (migration 00023):
	// its waiter and that API process's presence.
	for _, q := range []string{`SELECT count(waiter) FROM orders`, `SELECT count(*) FROM api_presence`} {
		if err := try(q); err != nil {
			t.Errorf("as orderly_auditor, %s: %v", q, err)
		}
	}
	for _, q := range []string{
		`SELECT env FROM orders`, `SELECT stdin FROM orders`, `SELECT script FROM orders`,
		`SELECT action_secrets FROM orders`, `SELECT request_sha256 FROM orders`,
		`SELECT sha256 FROM api_tokens`, `SELECT sha256 FROM runbook_delegations`,
		`INSERT INTO rejections (status, code, reason) VALUES (400, 'x', 'y')`,
		`UPDATE orders SET status = 'failed'`, `DELETE FROM order_events`,
		// A better match than the catalog's jsonb_build_object(VARIADIC
		// "any") for a call orderly's own role makes (a cancel's event):
		// it would run with that role's rights.
		`CREATE FUNCTION public.jsonb_build_object(text, text, text, integer) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb'`,
	} {
		if err := try(q); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("as orderly_auditor, %s: %v, want permission denied", q, err)
		}
	}
}

// TestSQLDocExecutionOrder runs docs/sql.md's query of a host's execution
// order on a history whose orders stream was created again (the NATS
// store lost): stream_seq then starts again at 1, so the query must list
// the orders as they started, not by their sequence, and find no overlap.
func TestSQLDocExecutionOrder(t *testing.T) {
	e := newStoreEnv(t)
	doc, err := os.ReadFile("../../docs/sql.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)-- Execution order on a host.*?;`).Find(doc)
	if m == nil {
		t.Fatal("docs/sql.md has no query of a host's execution order")
	}
	// Two orders from the first stream, then one from the stream created
	// again, a second apart each.
	var want []string
	for i, seq := range []int{41, 42, 1} {
		o := e.insert("web-3", "alice", nil)
		e.exec(`UPDATE orders SET status = 'succeeded', stream_seq = $2,
			started_at = now() + make_interval(secs => $3), finished_at = now() + make_interval(secs => $3 + 0.5)
			WHERE id = $1`, o.ID, seq, i)
		want = append(want, o.ID.String())
	}
	rows, err := e.pool.Query(e.ctx, string(m), pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := vals[0].([16]byte)
		got = append(got, uuid.UUID(id).String())
		if len(vals) > 4 && vals[4] == true {
			t.Errorf("order %v reported overlapping the one before", uuid.UUID(id))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("execution order %v, want the orders as they started %v", got, want)
	}
}

// TestAuditorCannotStopActionRuns: a session of the auditors' role of
// docs/sql.md that holds the lock an action's run limit serializes on
// would stop every run of the action for as long as it kept it. The
// lock was an advisory lock, which any role may take (the trigger's key
// is in migrations/); it is a row now, which the role may not lock.
func TestAuditorCannotStopActionRuns(t *testing.T) {
	e := newStoreEnv(t)
	run := func(o *order.Order) {
		o.Kind, o.Command = order.KindAction, "action:restart"
		o.Action = &order.Action{Name: "restart", Params: map[string]string{"id": "0042"},
			Limit: order.ActionLimit{Runs: 10, Per: time.Minute}}
	}
	e.insert("web-3", "alice", run) // the action's lock row exists
	conn, err := e.pool.Acquire(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx := auditorTx(t, e.ctx, conn)
	defer tx.Rollback(e.ctx)
	if _, err := tx.Exec(e.ctx, `SELECT pg_advisory_xact_lock(hashtextextended('orderly.action:restart', 0))`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, `SAVEPOINT s`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, `SELECT 1 FROM action_locks WHERE action = 'restart' FOR UPDATE`); err == nil ||
		!strings.Contains(err.Error(), "permission denied") {
		t.Errorf("as orderly_auditor, locking the action's row: %v, want permission denied", err)
	}
	if _, err := tx.Exec(e.ctx, `ROLLBACK TO SAVEPOINT s`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	o := &order.Order{ID: order.NewID(), Host: "web-3", Timeout: time.Minute, Principal: "alice", Source: "rest"}
	run(o)
	if prev, err := e.store.InsertOrder(ctx, o); err != nil || prev != nil {
		t.Fatalf("a run of the action while the auditor holds its old lock: %v, %v", prev, err)
	}
}

// auditorTx begins a transaction on b in which docs/sql.md's auditor
// role exists and is the current role; the caller rolls it back.
func auditorTx(t *testing.T, ctx context.Context, b interface {
	Begin(context.Context) (pgx.Tx, error)
}) pgx.Tx {
	t.Helper()
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, auditorRoleSQL(t)); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatalf("the auditor role of docs/sql.md: %v", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL ROLE orderly_auditor`); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatal(err)
	}
	return tx
}

// auditorRoleSQL returns docs/sql.md's block that makes the auditors'
// role.
func auditorRoleSQL(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/sql.md")
	if err != nil {
		t.Fatal(err)
	}
	var setup []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], "CREATE ROLE orderly_auditor") {
			setup = append(setup, m[1])
		}
	}
	if len(setup) != 1 {
		t.Fatalf("docs/sql.md: %d auditor role blocks, want 1", len(setup))
	}
	return setup[0]
}

// TestSQLDocAuditorRoleRunsAgain: deploy.md has the auditors' block run
// again after a migration that adds what they read (00028's
// host_maintenance_log), on a database where it ran before. Its CREATE
// ROLE failed there (the role exists), and run as one transaction (`psql
// -1`, a client's multi-statement Exec) or with ON_ERROR_STOP that ended
// it before any grant.
func TestSQLDocAuditorRoleRunsAgain(t *testing.T) {
	e := newStoreEnv(t)
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(e.ctx)
	block := auditorRoleSQL(t)
	if _, err := tx.Exec(e.ctx, block); err != nil {
		t.Fatalf("the auditor role of docs/sql.md: %v", err)
	}
	// As a block from before 00028 left the role.
	if _, err := tx.Exec(e.ctx, `REVOKE SELECT ON host_maintenance_log FROM orderly_auditor`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, block); err != nil {
		t.Fatalf("the auditor role of docs/sql.md, run again: %v", err)
	}
	if _, err := tx.Exec(e.ctx, `SET LOCAL ROLE orderly_auditor`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(e.ctx, `SELECT count(*) FROM host_maintenance_log`).Scan(&n); err != nil {
		t.Errorf("as orderly_auditor after the block ran again, host_maintenance_log: %v", err)
	}
}

// TestAuditorQueriesRunInParallel: the row policies (migration 00012)
// leave the auditors' queries free to use parallel workers, as the
// owner's are: a function a policy calls that is PARALLEL UNSAFE kept
// every query of every other role on one process.
func TestAuditorQueriesRunInParallel(t *testing.T) {
	e := newStoreEnv(t)
	e.insert("web-3", "alice", nil)
	tx := auditorTx(t, e.ctx, e.pool)
	defer tx.Rollback(e.ctx)
	// Parallel workers for any table, however small.
	for _, q := range []string{`SET LOCAL parallel_setup_cost = 0`,
		`SET LOCAL parallel_tuple_cost = 0`, `SET LOCAL min_parallel_table_scan_size = 0`,
		`SET LOCAL max_parallel_workers_per_gather = 2`} {
		if _, err := tx.Exec(e.ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var plan strings.Builder
	rows, err := tx.Query(e.ctx, `EXPLAIN (COSTS OFF) SELECT status, count(*) FROM orders GROUP BY status`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan.String(), "Gather") {
		t.Errorf("as orderly_auditor, a count of orders by status plans no parallel workers:\n%s", plan.String())
	}
}

// TestSQLDocCancelRequestsReadNoHistory: docs/sql.md's "who killed what,
// when" reads the newest cancel requests and each one's order by its id,
// not all of cancel_requests, which keeps a row for every order ever
// canceled until retention: it sorted the whole table (migration 00018).
func TestSQLDocCancelRequestsReadNoHistory(t *testing.T) {
	e := newStoreEnv(t)
	q := sqlDocQuery(t, "-- Who killed what, when.")
	// A month of canceled orders, one every 2 minutes, then today's few,
	// canceled as the API does.
	e.exec(`WITH o AS (
	INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at, finished_at)
	SELECT gen_random_uuid(), 'web-' || i % 10, 'killed', 'sleep', 60000, 'alice', t, t
	FROM (SELECT i, now() - interval '30 days' + i * interval '2 min' AS t FROM generate_series(1, 20000) i) s
	RETURNING id, host, finished_at)
	INSERT INTO cancel_requests (order_id, host, actor, signal, requested_at) SELECT id, host, 'alice', 'SIGTERM', finished_at FROM o`)
	var today []uuid.UUID
	for range 3 {
		o := e.insert("web-1", "bob", nil)
		if _, err := e.store.RequestCancel(e.ctx, o.ID, "bob", "SIGTERM"); err != nil {
			t.Fatal(err)
		}
		today = append([]uuid.UUID{o.ID}, today...)
	}
	e.exec(`ANALYZE orders`)
	e.exec(`ANALYZE cancel_requests`)
	tx := auditorTx(t, e.ctx, e.pool)
	defer tx.Rollback(e.ctx)
	scans := planScans(t, e.ctx, tx, q)
	for _, s := range scans {
		if strings.HasPrefix(s, "Seq Scan") {
			t.Errorf("who killed what reads the history: %s (plan: %v)", s, scans)
		}
	}
	rows, err := tx.Query(e.ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (uuid.UUID, error) {
		vals, err := r.Values()
		if err != nil {
			return uuid.Nil, err
		}
		return uuid.UUID(vals[0].([16]byte)), nil
	})
	if err != nil || len(ids) != 20 || !slices.Equal(ids[:3], today) {
		t.Errorf("who killed what: %d rows, first %v (%v); want 20, today's newest first %v", len(ids), ids[:min(3, len(ids))], err, today)
	}
}

// sqlDocQuery returns the query of docs/sql.md that starts with comment.
func sqlDocQuery(t *testing.T, comment string) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/sql.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		if strings.Contains(m[1], "CREATE ROLE") {
			continue
		}
		for _, q := range sqlStatements(t, m[1]) {
			if strings.HasPrefix(strings.TrimSpace(q), comment) {
				return q
			}
		}
	}
	t.Fatalf("docs/sql.md has no query under %q", comment)
	return ""
}

// sqlStatements splits a block of docs/sql.md's queries into statements:
// at a ';' that ends a line of SQL, not one that ends a line of a comment
// ("… the last month;" then "-- then the orders refused meanwhile"),
// which split off a statement of comments alone that every test of the
// page ran as a query. Each statement must hold SQL.
func sqlStatements(t *testing.T, block string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	code := false
	for _, line := range strings.SplitAfter(block, "\n") {
		cur.WriteString(line)
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, "--") {
			continue
		}
		code = true
		if strings.HasSuffix(l, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
			code = false
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		if !code {
			t.Errorf("docs/sql.md: comments with no query after them:\n%s", rest)
		} else {
			out = append(out, rest)
		}
	}
	return out
}

// planScans returns how q's plan reads each table ("Seq Scan on orders",
// "Index Scan on orders", …).
func planScans(t *testing.T, ctx context.Context, tx pgx.Tx, q string) []string {
	t.Helper()
	var plan []map[string]any
	if err := tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+q).Scan(&plan); err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	var scans []string
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if rel, ok := n["Relation Name"].(string); ok {
			scans = append(scans, n["Node Type"].(string)+" on "+rel)
		}
		if kids, ok := n["Plans"].([]any); ok {
			for _, k := range kids {
				walk(k.(map[string]any))
			}
		}
	}
	walk(plan[0]["Plan"].(map[string]any))
	return scans
}

// TestSQLDocQueriesOnAHistory runs docs/sql.md's queries, as its
// auditors' role, on a history with an order of each way an order ends
// (succeeded, failed, killed, canceled, expired, interrupted and reaped,
// requeued and run again) and a host put in maintenance and taken out,
// and checks that each returns what its text says. The run of every
// query on an empty history (TestSQLDocQueriesAsAuditor) proves only
// that it runs: "who put web-2 in maintenance" was a statement of
// comments alone there, split at the ';' that ends its comment.
func TestSQLDocQueriesOnAHistory(t *testing.T) {
	e := newStoreEnv(t)
	e.own("web-3", "w1")
	finish := func(o *order.Order, st order.Status, code *int, sig string) {
		t.Helper()
		f := postgres.Finish{Status: st, Actor: "w1", Result: order.Result{ExitCode: code, Signal: sig, DurationMS: 5}}
		if err := e.store.Complete(e.ctx, o.ID, o.Attempt, f); err != nil {
			t.Fatal(err)
		}
	}
	zero, two := 0, 2
	ok := e.insert("web-3", "alice", nil)
	finish(e.claim(ok.ID, "w1"), order.StatusSucceeded, &zero, "")
	failed := e.insert("web-3", "alice", nil)
	finish(e.claim(failed.ID, "w1"), order.StatusFailed, &two, "")
	killed := e.insert("web-3", "alice", nil)
	ck := e.claim(killed.ID, "w1")
	if _, err := e.store.RequestCancel(e.ctx, killed.ID, "alice", "SIGTERM"); err != nil {
		t.Fatal(err)
	}
	finish(ck, order.StatusKilled, nil, "SIGTERM")
	canceled := e.insert("web-3", "alice", nil)
	if _, err := e.store.RequestCancel(e.ctx, canceled.ID, "bob", "SIGTERM"); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Second)
	expired := e.insert("web-3", "alice", func(o *order.Order) { o.ExpiresAt = &past })
	if got, err := e.store.ExpireDue(e.ctx, 10); err != nil || len(got) != 1 || got[0].ID != expired.ID {
		t.Fatalf("expire due: %v %v, want the order past its deadline", got, err)
	}
	// A worker vanished from these two: its successor (w2, the host's
	// owner now) interrupts the one and puts the idempotent one back,
	// then records what it found of their processes.
	interrupted := e.insert("web-3", "alice", nil)
	ci := e.claim(interrupted.ID, "w1")
	e.own("web-3", "w2")
	partial := &postgres.PartialOutput{Stdout: []byte("before\n")}
	if ok, err := e.store.InterruptAttempt(e.ctx, interrupted.ID, ci.Attempt, "w2", "its worker vanished", partial); err != nil || !ok {
		t.Fatalf("interrupt: %v %v", ok, err)
	}
	if err := e.store.RecordEvidence(e.ctx, interrupted.ID, ci.Attempt, "w2", postgres.Evidence{Reap: map[string]any{"found": false}}); err != nil {
		t.Fatal(err)
	}
	e.own("web-3", "w1")
	again := e.insert("web-3", "alice", func(o *order.Order) { o.Idempotent = true })
	ca := e.claim(again.ID, "w1")
	e.own("web-3", "w2")
	if ok, err := e.store.Requeue(e.ctx, again.ID, ca.Attempt, "w2", "its worker vanished"); err != nil || !ok {
		t.Fatalf("requeue: %v %v", ok, err)
	}
	if err := e.store.RecordEvidence(e.ctx, again.ID, ca.Attempt, "w2", postgres.Evidence{Reap: map[string]any{"found": false}}); err != nil {
		t.Fatal(err)
	}
	finish(e.claim(again.ID, "w2"), order.StatusSucceeded, &zero, "")
	queued := e.insert("web-3", "alice", nil)
	reason := "disk swap"
	if _, err := e.store.StartMaintenance(e.ctx, "web-2", &reason, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.EndMaintenance(e.ctx, "web-2", "admin"); err != nil {
		t.Fatal(err)
	}
	all := []*order.Order{ok, failed, killed, canceled, expired, interrupted, again, queued}

	tx := auditorTx(t, e.ctx, e.pool)
	defer tx.Rollback(e.ctx)
	// rows runs docs/sql.md's query under comment (its placeholders
	// replaced: old, new, …) as the auditor and returns its rows as
	// text, a column each.
	rows := func(comment string, replace ...string) [][]string {
		t.Helper()
		q := strings.NewReplacer(replace...).Replace(sqlDocQuery(t, comment))
		r, err := tx.Query(e.ctx, q, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: %v\n%s", comment, err, q)
		}
		got, err := pgx.CollectRows(r, func(r pgx.CollectableRow) ([]string, error) {
			vals, err := r.Values()
			var out []string
			for _, v := range vals {
				if id, ok := v.([16]byte); ok {
					v = uuid.UUID(id)
				}
				out = append(out, fmt.Sprint(v))
			}
			return out, err
		})
		if err != nil {
			t.Fatalf("%s: %v", comment, err)
		}
		return got
	}
	firsts := func(rs [][]string) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r[0])
		}
		return out
	}

	// "The outcome of an order is therefore orders.status, or its last
	// event with a status."
	outcome := map[string]string{}
	for _, r := range rows("SELECT DISTINCT ON (order_id)") {
		outcome[r[0]] = r[2]
	}
	for _, o := range all {
		var st string
		if err := tx.QueryRow(e.ctx, `SELECT status FROM orders WHERE id = $1`, o.ID).Scan(&st); err != nil {
			t.Fatal(err)
		}
		if outcome[o.ID.String()] != st {
			t.Errorf("order %s: the outcome query says %q, orders.status %q", o.ID, outcome[o.ID.String()], st)
		}
	}
	// Every order has submitted first and exactly one event with a
	// terminal status; only reaped (and job_after_takeover) after it.
	for _, o := range all {
		var types, statuses []string
		r, err := tx.Query(e.ctx, `SELECT type, coalesce(status, '') FROM order_events WHERE order_id = $1 ORDER BY id`, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var ty, st string
			if err := r.Scan(&ty, &st); err != nil {
				t.Fatal(err)
			}
			types, statuses = append(types, ty), append(statuses, st)
		}
		if err := r.Err(); err != nil || len(types) == 0 || types[0] != "submitted" {
			t.Fatalf("order %s: events %v (%v), want submitted first", o.ID, types, err)
		}
		terminal := -1
		for i, st := range statuses {
			if st != "" && order.Status(st).Terminal() {
				if terminal >= 0 {
					t.Errorf("order %s: two terminal events: %v", o.ID, types)
				}
				terminal = i
			}
		}
		if o == queued {
			if terminal >= 0 {
				t.Errorf("queued order %s has a terminal event: %v", o.ID, types)
			}
			continue
		}
		if terminal < 0 {
			t.Errorf("order %s: no terminal event: %v", o.ID, types)
			continue
		}
		for _, ty := range types[terminal+1:] {
			if ty != "reaped" && ty != "job_after_takeover" {
				t.Errorf("order %s: %s after its terminal event: %v", o.ID, ty, types)
			}
		}
	}
	// The requeued order's history: reaped follows its requeued event,
	// and its next claim is attempt 2 (the attempt row of the page).
	hist := rows("-- The full history of one order", "'0193…'", "'"+again.ID.String()+"'")
	var types []string
	for _, r := range hist {
		types = append(types, r[1])
	}
	if want := []string{"submitted", "started", "requeued", "reaped", "started", "finished"}; !slices.Equal(types, want) {
		t.Errorf("the requeued order's history: %v, want %v", types, want)
	}
	attempts := map[*order.Order]int{ok: 1, interrupted: 1, again: 2, canceled: 0, expired: 0}
	for o, want := range attempts {
		var n int
		if err := tx.QueryRow(e.ctx, `SELECT attempt FROM orders WHERE id = $1`, o.ID).Scan(&n); err != nil || n != want {
			t.Errorf("order %s (%s): attempt %d (%v), want %d", o.ID, e.get(o.ID).Status, n, err, want)
		}
	}

	if got := firsts(rows("-- The last 20 orders that were killed")); !slices.Equal(got, []string{killed.ID.String()}) {
		t.Errorf("the last killed orders: %v, want %v", got, killed.ID)
	}
	if got := firsts(rows("-- Orders that were interrupted")); !slices.Equal(got, []string{interrupted.ID.String()}) {
		t.Errorf("the interrupted orders: %v, want %v", got, interrupted.ID)
	}
	if got := firsts(rows("-- Who killed what, when.")); !slices.Equal(got, []string{canceled.ID.String(), killed.ID.String()}) {
		t.Errorf("who killed what: %v, want the canceled then the killed order, newest first", got)
	}
	if got := firsts(rows("-- The queue of web-3")); !slices.Equal(got, []string{queued.ID.String()}) {
		t.Errorf("the queue of web-3: %v, want %v", got, queued.ID)
	}
	failures := map[string]string{}
	for _, r := range rows("-- Failures per host in the last day") {
		failures[r[1]] = r[2]
	}
	if want := map[string]string{"failed": "1", "killed": "1", "expired": "1", "interrupted": "1"}; !maps.Equal(failures, want) {
		t.Errorf("failures per status in the last day: %v, want %v", failures, want)
	}
	if got := rows("-- Output of an order as text", "'0193…'", "'"+interrupted.ID.String()+"'"); len(got) != 1 || got[0][0] != "before\n" {
		t.Errorf("the interrupted order's output: %q, want what its successor kept", got)
	}
	var log []string
	for _, r := range rows("-- Who put web-2 in maintenance") {
		log = append(log, r[1]+" "+r[2]+" "+r[3])
	}
	if want := []string{"on admin disk swap", "off admin disk swap"}; !slices.Equal(log, want) {
		t.Errorf("who put web-2 in maintenance: %q, want %q", log, want)
	}
}
