package postgres_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
)

// Every UPDATE of orders reads and compiles the WHEN clause of each row
// trigger on an UPDATE of status, from its stored text, whether or not it
// fires: the claim and the result of every order pay for each. Migration
// 00024 made the three triggers that erase an order's pending inputs
// (none of which fires for an order without any) one; 00030 folded
// orders_mark_abandoned into orders_track_active and made orders_erase's
// WHEN name the two statuses that are not terminal instead of the eight
// that are. On PostgreSQL 15 the three WHEN clauses were 6,048 characters
// of stored node tree; the two are 3,800. A trigger added here is paid by
// every order.
func TestOrdersUpdateReadsTwoTriggerConditions(t *testing.T) {
	e := newStoreEnv(t)
	// tgtype: 1 row, 2 before, 16 update (pg_trigger.h).
	const updateTriggers = `FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal
		AND tgtype & 1 = 1 AND tgtype & 16 = 16`
	got := e.texts(`SELECT tgname::text || CASE WHEN tgtype & 2 = 2 THEN ' (before)' ELSE '' END ` + updateTriggers + ` ORDER BY tgname`)
	if want := []string{"orders_erase (before)", "orders_track_active_update"}; !slices.Equal(got, want) {
		t.Errorf("row triggers of an UPDATE of orders: %v; want %v", got, want)
	}
	var chars int
	if err := e.pool.QueryRow(e.ctx, `SELECT coalesce(sum(length(tgqual)), 0) `+updateTriggers).Scan(&chars); err != nil {
		t.Fatal(err)
	}
	if chars > 4500 {
		t.Errorf("the WHEN clauses an UPDATE of orders reads: %d characters; want at most 4500", chars)
	}
}

// pending reads whether an order still holds each of its pending inputs,
// and how many delegations name it.
func (e *storeEnv) pending(id uuid.UUID) (env, stdin, script, secrets bool, delegations int) {
	e.t.Helper()
	if err := e.pool.QueryRow(e.ctx, `SELECT env IS NOT NULL, stdin IS NOT NULL, script IS NOT NULL, action_secrets IS NOT NULL,
		(SELECT count(*) FROM runbook_delegations WHERE order_id = $1) FROM orders WHERE id = $1`, id).
		Scan(&env, &stdin, &script, &secrets, &delegations); err != nil {
		e.t.Fatal(err)
	}
	return
}

// withInputs records a queued order of h1 that holds env, stdin, a script
// payload, action secrets and a delegation, as no single path makes one:
// the erase covers each.
func (e *storeEnv) withInputs() uuid.UUID {
	e.t.Helper()
	o := e.insert("h1", "alice", func(o *order.Order) {
		o.Env = map[string]string{"SECRET": "v"}
		o.EnvNames = []string{"SECRET"}
		o.Stdin = []byte("input")
	})
	e.exec(`UPDATE orders SET script = '\x7b7d', action_secrets = '{"pw":"hunter2"}' WHERE id = $1`, o.ID)
	e.exec(`INSERT INTO runbook_delegations (sha256, order_id, principal, kind, correlation_id, stack, hosts)
		VALUES (sha256(uuid_send($1)), $1, 'alice', 'runbook', '', '{}', '{}')`, o.ID)
	return o.ID
}

// Migration 00024 makes the three triggers that erase an order's pending
// inputs one: an order queued before it keeps its inputs while it runs
// and loses them, and its delegations, when it ends after it; rolled back,
// the three triggers erase them again.
func TestEraseMigrationErasesAtTheEnd(t *testing.T) {
	e, p := migratedDown(t, 23)
	e.own("h1", "w1")
	// Today's insert names orders.parent_run (00025): the column stands
	// in for it, as in insertBefore.
	e.exec(`ALTER TABLE orders ADD COLUMN parent_run uuid`)
	queued := e.withInputs()
	e.exec(`ALTER TABLE orders DROP COLUMN parent_run`)
	if _, err := p.Up(e.ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	e.exec(`UPDATE orders SET status = 'running' WHERE id = $1`, queued)
	if env, stdin, script, secrets, dels := e.pending(queued); !env || !stdin || !script || !secrets || dels != 1 {
		t.Fatalf("a running order lost its inputs: env %v stdin %v script %v secrets %v delegations %d", env, stdin, script, secrets, dels)
	}
	e.exec(`UPDATE orders SET status = 'succeeded', finished_at = now() WHERE id = $1`, queued)
	if env, stdin, script, secrets, dels := e.pending(queued); env || stdin || script || secrets || dels != 0 {
		t.Errorf("after the end: env %v stdin %v script %v secrets %v delegations %d; want all gone", env, stdin, script, secrets, dels)
	}
	// The store's own paths: a claim keeps env and stdin, its result erases them.
	plain := e.insert("h1", "alice", func(o *order.Order) {
		o.Env = map[string]string{"SECRET": "v"}
		o.EnvNames = []string{"SECRET"}
		o.Stdin = []byte("input")
	})
	c := e.claim(plain.ID, "w1")
	if c.Env["SECRET"] != "v" || string(c.Stdin) != "input" {
		t.Fatalf("the claim returned env %v, stdin %q", c.Env, c.Stdin)
	}
	if err := e.store.Complete(e.ctx, plain.ID, c.Attempt, succeeded("x")); err != nil {
		t.Fatal(err)
	}
	if env, stdin, _, _, _ := e.pending(plain.ID); env || stdin {
		t.Errorf("after its result: env %v, stdin %v; want both erased", env, stdin)
	}
	if _, err := p.DownTo(e.ctx, 23); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	e.exec(`ALTER TABLE orders ADD COLUMN parent_run uuid`)
	back := e.withInputs()
	e.exec(`ALTER TABLE orders DROP COLUMN parent_run`)
	e.exec(`UPDATE orders SET status = 'canceled', finished_at = now() WHERE id = $1`, back)
	if env, stdin, script, secrets, dels := e.pending(back); env || stdin || script || secrets || dels != 0 {
		t.Errorf("rolled back to 00023: env %v stdin %v script %v secrets %v delegations %d; want all gone", env, stdin, script, secrets, dels)
	}
}

// Migration 00030 folds orders_mark_abandoned into orders_track_active
// and rewrites orders_erase's WHEN: before it, after it and rolled back,
// an attempt a successor interrupts or queues again keeps its process
// record to be reaped (00017), and an interrupted order loses its
// inputs while a queued one keeps them.
func TestUpdateTriggersMigrationKeepsMarksAndErase(t *testing.T) {
	e, p := migratedDown(t, 29)
	p0 := postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b", MachineID: "m"}
	check := func(when string) {
		t.Helper()
		e.own("h1", "w1")
		var ids []uuid.UUID
		for _, idempotent := range []bool{false, true} {
			o := e.insert("h1", "alice", func(o *order.Order) {
				o.Env = map[string]string{"SECRET": "v"}
				o.EnvNames = []string{"SECRET"}
				o.Stdin = []byte("input")
				o.Idempotent = idempotent
			})
			c := e.claim(o.ID, "w1")
			if err := e.store.RecordProcess(e.ctx, o.ID, c.Attempt, "w1", p0); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, o.ID)
		}
		e.own("h1", "w2") // w1 died
		if ok, err := e.store.InterruptAttempt(e.ctx, ids[0], 1, "w2", "test", nil); !ok || err != nil {
			t.Fatalf("%s: interrupt: %v %v", when, ok, err)
		}
		if ok, err := e.store.Requeue(e.ctx, ids[1], 1, "w2", "test"); !ok || err != nil {
			t.Fatalf("%s: requeue: %v %v", when, ok, err)
		}
		got, err := e.store.UnreapedAttempts(e.ctx, "h1")
		want := []postgres.Unreaped{{ID: ids[0], Attempt: 1, Worker: "w1"}, {ID: ids[1], Attempt: 1, Worker: "w1", Requeued: true}}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: unreaped: %+v, %v; want %+v", when, got, err, want)
		}
		if env, stdin, _, _, _ := e.pending(ids[0]); env || stdin {
			t.Errorf("%s: interrupted order keeps env %v, stdin %v", when, env, stdin)
		}
		if env, stdin, _, _, _ := e.pending(ids[1]); !env || !stdin {
			t.Errorf("%s: queued again, the order lost env %v, stdin %v", when, !env, !stdin)
		}
		for _, u := range want {
			if err := e.store.RecordEvidence(e.ctx, u.ID, u.Attempt, "w2", postgres.Evidence{Reap: map[string]any{"found": false}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.store.Cancel(e.ctx, ids[1], "test", "done"); err != nil {
			t.Fatal(err)
		}
	}
	check("at 00029")
	if _, err := p.Up(e.ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	check("at 00030")
	if _, err := p.DownTo(e.ctx, 29); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	check("rolled back to 00029")
}

// TestUpdateTriggersMigrationKeepsEveryTransition holds migration 00030
// to what the triggers did before it, on every change of status the
// table allows (the ten statuses its CHECK admits, from each to each,
// those the service never makes included: a hand-written UPDATE, or a
// later change, makes them), for an order holding every pending input,
// a script order with none, and an exec order with none, each with an
// unreaped process record, a delegation and an unpublished mark: what
// the update leaves of the inputs, the delegations, active_orders, the
// marks of abandoned attempts and the unpublished mark is the same at
// 00029, at 00030 and rolled back to 00029.
func TestUpdateTriggersMigrationKeepsEveryTransition(t *testing.T) {
	e, p := migratedDown(t, 29)
	e.own("h1", "w1")
	statuses := []string{"queued", "running", "succeeded", "failed", "timed_out", "killed", "canceled", "interrupted", "rejected", "expired"}
	const inputs = `env = '{"SECRET":"v"}', stdin = 'input', script = '\x7b7d', action_secrets = '{"pw":"hunter2"}'`
	variants := []struct{ name, kind, set string }{
		{"inputs", "exec", inputs},
		{"script", "script", "env = NULL, stdin = NULL, script = NULL, action_secrets = NULL"},
		{"plain", "exec", "env = NULL, stdin = NULL, script = NULL, action_secrets = NULL"},
	}
	state := func(id uuid.UUID) string {
		t.Helper()
		var s string
		if err := e.pool.QueryRow(e.ctx, `SELECT concat_ws(' ', o.status,
			'env=' || (o.env IS NOT NULL), 'stdin=' || (o.stdin IS NOT NULL), 'script=' || (o.script IS NOT NULL),
			'secrets=' || (o.action_secrets IS NOT NULL),
			'delegations=' || (SELECT count(*) FROM runbook_delegations d WHERE d.order_id = o.id),
			'active=' || coalesce((SELECT a.status FROM active_orders a WHERE a.id = o.id), '-'),
			'abandoned=' || (SELECT count(*) FROM order_processes p WHERE p.order_id = o.id AND p.abandoned_at IS NOT NULL),
			'unpublished=' || (SELECT count(*) FROM unpublished u WHERE u.id = o.id))
			FROM orders o WHERE o.id = $1`, id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	transitions := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, v := range variants {
			for _, from := range statuses {
				for _, to := range statuses {
					id := e.insert("h1", "alice", nil).ID
					e.exec(`UPDATE orders SET kind = $2, status = $3, attempt = 1 WHERE id = $1`, id, v.kind, from)
					// What the move to from erased, back; no status in
					// the SET list, so no trigger of an UPDATE OF status.
					e.exec(`UPDATE orders SET `+v.set+` WHERE id = $1`, id)
					e.exec(`INSERT INTO runbook_delegations (sha256, order_id, principal, kind, correlation_id, stack, hosts)
						VALUES (sha256(uuid_send($1)), $1, 'alice', 'runbook', '', '{}', '{}')`, id)
					e.exec(`INSERT INTO order_processes (order_id, attempt, worker, pid, pgid, start_time, boot_id)
						VALUES ($1, 1, 'w1', 4242, 4242, 99, 'b')`, id)
					e.exec(`INSERT INTO unpublished (id, submitted_at) VALUES ($1, now()) ON CONFLICT DO NOTHING`, id)
					before := state(id)
					e.exec(`UPDATE orders SET status = $2 WHERE id = $1`, id, to)
					out[v.name+" "+from+" -> "+to] = before + " => " + state(id)
				}
			}
		}
		// A status the CHECK does not admit is refused, whatever the
		// triggers' WHEN clauses say of it.
		id := e.withInputs()
		_, err := e.pool.Exec(e.ctx, `UPDATE orders SET status = 'bogus' WHERE id = $1`, id)
		out["inputs queued -> bogus"] = fmt.Sprint(err != nil) + " " + state(id)
		return out
	}
	at29 := transitions()
	if _, err := p.Up(e.ctx); err != nil {
		t.Fatalf("migrate up: %v", err)
	}
	at30 := transitions()
	if _, err := p.DownTo(e.ctx, 29); err != nil {
		t.Fatalf("migrate down: %v", err)
	}
	back := transitions()
	for _, k := range slices.Sorted(maps.Keys(at29)) {
		if at30[k] != at29[k] {
			t.Errorf("%s at 00030: %s; at 00029: %s", k, at30[k], at29[k])
		}
		if back[k] != at29[k] {
			t.Errorf("%s rolled back to 00029: %s; at 00029: %s", k, back[k], at29[k])
		}
	}
	if len(at29) != 3*len(statuses)*len(statuses)+1 || len(at30) != len(at29) {
		t.Errorf("transitions: %d at 00029, %d at 00030", len(at29), len(at30))
	}
}
