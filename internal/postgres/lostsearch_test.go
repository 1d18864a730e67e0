package postgres_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestLostSearchReadsEachHostsBatchOnly counts the rows the lost-order
// search's question (QueuedPublishedOlderThan, asked every minute by
// intake's EndLost) reads, with auto_explain's actual row counts: each
// host's perHost oldest queued orders, whatever the queue of a host no
// worker serves holds behind them and whatever the history. It read
// every queued order of every host (and, past a few thousand, every row
// of orders) at each run: thousands of orders queued for a host whose
// worker is down for hours were read again every minute
// (docs/decisions.md, hA25).
func TestLostSearchReadsEachHostsBatchOnly(t *testing.T) {
	ctx := testenv.Context(t)
	e, log := explainedStore(t, ctx, 0, `SET auto_explain.log_analyze = on; SET auto_explain.log_timing = off;`)
	const queued, perHost = 5000, 200
	// A history of finished orders, a long queue for "nowhere" (no
	// worker), three orders queued for web-1.
	e.exec(`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at, started_at, finished_at, attempt, worker, exit_code)
	SELECT gen_random_uuid(), 'web-' || i % 4, 'succeeded', 'true', 60000, 'alice', t, t, t, 1, 'w', 0
	FROM (SELECT i, now() - interval '2 days' + i * interval '1 s' AS t FROM generate_series(1, $1) i) s`, queued)
	e.exec(`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at)
	SELECT gen_random_uuid(), CASE WHEN i <= 3 THEN 'web-1' ELSE 'nowhere' END, 'queued', 'true', 60000, 'alice',
		CASE WHEN i = 3 THEN now() ELSE now() - interval '1 day' + i * interval '1 s' END
	FROM generate_series(1, $1 + 3) i`, queued)
	// nowhere's two oldest are not known to be published: the search
	// skips them, as it skips web-1's order younger than the age.
	e.exec(`INSERT INTO unpublished (id, submitted_at)
	SELECT id, now() FROM active_orders WHERE host = 'nowhere' ORDER BY id LIMIT 2`)
	list, plans := lostSearch(e, log, perHost)
	read := 0
	for _, p := range plans {
		var ex struct {
			Plan map[string]any `json:"Plan"`
		}
		if err := json.Unmarshal([]byte(p), &ex); err != nil {
			t.Fatalf("plan %q: %v", p, err)
		}
		read += rowsScanned(ex.Plan)
	}
	byHost := map[string]int{}
	for i, o := range list {
		byHost[o.Host]++
		if i > 0 && (list[i-1].Host > o.Host || list[i-1].Host == o.Host && list[i-1].ID.String() >= o.ID.String()) {
			t.Fatalf("not by host, then oldest first: %v before %v", list[i-1], o)
		}
	}
	if byHost["nowhere"] != perHost || byHost["web-1"] != 2 || len(byHost) != 2 {
		t.Fatalf("listed %v; want %d of nowhere and web-1's 2 older than the age", byHost, perHost)
	}
	var want []string
	for _, o := range list {
		if o.Host == "nowhere" {
			want = append(want, o.ID.String())
		}
	}
	rows, err := e.pool.Query(ctx, `SELECT id::text FROM active_orders WHERE host = 'nowhere' ORDER BY id OFFSET 2 LIMIT $1`, perHost)
	if err != nil {
		t.Fatal(err)
	}
	oldest, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(want, ",") != strings.Join(oldest, ",") {
		t.Fatalf("nowhere's listed orders are not its %d oldest published by id", perHost)
	}

	t.Logf("the search read %d rows of tables and indexes for %d queued orders", read, queued+3)
	// Each listed order is read in active_orders, orders and unpublished
	// at most, plus a lookup or two per host: the same count at any
	// length of nowhere's queue.
	if limit := 3*(perHost+5) + 50; read > limit {
		t.Fatalf("the search read %d rows for %d orders queued (%d listed); want at most %d, the listed batches' own", read, queued+3, len(list), limit)
	}
}

// lostSearch analyzes the tables the lost-order search reads, asks it
// for the orders queued over an hour (perHost a host) and returns them
// with the plans auto_explain sent for it.
func lostSearch(e *storeEnv, log *planLog, perHost int) ([]postgres.QueuedOrder, []string) {
	e.t.Helper()
	for _, table := range []string{"orders", "active_orders", "unpublished"} {
		e.exec(`ANALYZE ` + table)
	}
	log.reset()
	list, err := e.store.QueuedPublishedOlderThan(e.ctx, time.Hour, perHost)
	if err != nil {
		e.t.Fatal(err)
	}
	plans := log.taken()
	if len(plans) == 0 {
		e.t.Fatal("auto_explain sent no plan: it is not observing the store")
	}
	return list, plans
}

// rowsScanned is how many rows the scans of a plan that EXPLAIN ANALYZE
// measured read from tables and indexes: those they returned and those
// their filter removed, in every loop.
func rowsScanned(n map[string]any) int {
	total := 0
	if ty, _ := n["Node Type"].(string); strings.HasSuffix(ty, "Scan") && n["Relation Name"] != nil {
		num := func(k string) int { v, _ := n[k].(float64); return int(v) }
		total += (num("Actual Rows") + num("Rows Removed by Filter") + num("Rows Removed by Index Recheck")) * max(1, num("Actual Loops"))
	}
	kids, _ := n["Plans"].([]any)
	for _, k := range kids {
		total += rowsScanned(k.(map[string]any))
	}
	return total
}

// TestLostSearchCompilesNoCode counts the functions PostgreSQL's JIT
// compiled for the lost-order search (asked every minute by intake's
// EndLost) over a long queue of a host no worker serves, read from
// auto_explain's JIT summary. The planner prices the search by every
// queued order (it cannot see the per-host LIMIT stop early), so past a
// few thousand queued the estimate passes jit_above_cost and the
// inlining and optimizing thresholds: with JIT on, each run compiled 38
// functions in about a third of a second of PostgreSQL's CPU to execute
// for a few milliseconds (docs/benchmarks.md, hE27). Neither on serve's
// managed cluster, which runs with jit off (testenv's is started the same
// way), nor on a server whose sessions have it on.
func TestLostSearchCompilesNoCode(t *testing.T) {
	for _, c := range []struct{ name, settings string }{
		{"managed cluster", ""},
		{"server with jit on", "SET jit = on;"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testenv.Context(t)
			e, log := explainedStore(t, ctx, 0, `SET auto_explain.log_analyze = on; SET auto_explain.log_timing = off; `+c.settings)
			const queued, perHost = 30000, 200
			e.exec(`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at)
			SELECT gen_random_uuid(), 'nowhere', 'queued', 'true', 60000, 'alice', now() - interval '1 day' + i * interval '1 ms'
			FROM generate_series(1, $1) i`, queued)
			list, plans := lostSearch(e, log, perHost)
			if len(list) != perHost {
				t.Fatalf("listed %d orders; want nowhere's %d oldest", len(list), perHost)
			}
			compiled := 0
			for _, p := range plans {
				var ex struct {
					Plan struct {
						TotalCost float64 `json:"Total Cost"`
					} `json:"Plan"`
					JIT struct {
						Functions int `json:"Functions"`
					} `json:"JIT"`
				}
				if err := json.Unmarshal([]byte(p), &ex); err != nil {
					t.Fatalf("plan %q: %v", p, err)
				}
				t.Logf("the search's plan costs %.0f; JIT compiled %d functions", ex.Plan.TotalCost, ex.JIT.Functions)
				compiled += ex.JIT.Functions
			}
			if compiled != 0 {
				t.Fatalf("PostgreSQL's JIT compiled %d functions for one lost-order search over %d queued orders; want none", compiled, queued)
			}
		})
	}
}
