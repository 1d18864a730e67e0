package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// explained are the statements the per-order paths and the periodic jobs
// run (internal/postgres, as of this bench), with psql variables for their
// parameters: :'id' a finished order, :'host' its host. Each is EXPLAIN
// ANALYZEd inside a transaction that is rolled back.
var explained = []struct{ name, sql string }{
	{"claim (worker, per order)", `UPDATE orders SET status = 'running', attempt = attempt + 1, started_at = now(), stream_seq = 1, worker = 'x'
	WHERE id = :'id' AND status = 'queued' AND (expires_at IS NULL OR expires_at > now())
	AND EXISTS (SELECT 1 FROM hosts h WHERE h.host = orders.host AND h.owner = 'x') RETURNING id`},
	{"record process (worker, per order)", `SELECT id FROM orders WHERE id = :'id' AND attempt = 1 AND status = 'running' AND worker = 'x' FOR SHARE`},
	{"complete (worker, per order)", `UPDATE orders SET status = 'succeeded', finished_at = now(), exit_code = 0 WHERE id = :'id' AND status = 'running' AND attempt = 1 RETURNING id`},
	{"get order (API ?wait, GET)", `SELECT * FROM orders WHERE id = :'id'`},
	{"order events (GET …/events)", `SELECT id, at, type, status, actor, detail FROM order_events WHERE order_id = :'id' ORDER BY id`},
	{"idempotency check (insert trigger)", `SELECT 1 FROM orders WHERE principal = 'admin' AND idempotency_key = 'k'`},
	{"mark published (intake, per batch)", `DELETE FROM unpublished WHERE id = ANY(ARRAY[:'id']::uuid[])`},
	{"forget started (reconciler, periodic)", `DELETE FROM unpublished u WHERE NOT EXISTS (SELECT 1 FROM active_orders a WHERE a.id = u.id AND a.status = 'queued')`},
	{"unpublished (reconciler, periodic)", `SELECT id FROM orders WHERE id = ANY(ARRAY(SELECT id FROM unpublished WHERE submitted_at < now() ORDER BY submitted_at LIMIT 500)) AND status = 'queued' ORDER BY submitted_at`},
	{"unpublished backlog (status, periodic)", `SELECT count(*), min(submitted_at) FROM unpublished`},
	{"expire due (periodic)", `SELECT o.id FROM active_orders a JOIN orders o ON o.id = a.id WHERE a.expires_at <= now() AND a.status = 'queued' AND o.status = 'queued' ORDER BY a.expires_at LIMIT 500 FOR UPDATE OF o SKIP LOCKED`},
	{"retention (hourly)", `DELETE FROM orders WHERE id = ANY(ARRAY(SELECT id FROM orders WHERE submitted_at < now() - interval '1 hour' AND finished_at < now() - interval '1 hour' AND status NOT IN ('queued','running') ORDER BY submitted_at LIMIT 1000))`},
	{"queue depth of a host", `SELECT count(*) FROM active_orders WHERE host = :'host' AND status = 'queued'`},
	{"queue depths (metrics, periodic)", `SELECT host, count(*) FROM active_orders WHERE status = 'queued' GROUP BY host`},
	{"queue ages (metrics, periodic)", `SELECT h.host, now() - o.submitted_at FROM (SELECT DISTINCT ON (host) host, id FROM active_orders WHERE status = 'queued' ORDER BY host, id) h JOIN orders o ON o.id = h.id`},
	{"running orders (takeover)", `SELECT id FROM orders WHERE id IN (SELECT id FROM active_orders WHERE host = :'host' AND status = 'running') AND status = 'running' ORDER BY stream_seq NULLS LAST, started_at`},
	{"list the orders of a host, newest first", `SELECT * FROM orders WHERE host = :'host' ORDER BY id DESC LIMIT 50`},
	{"list queued and running", `SELECT * FROM orders WHERE status = ANY(ARRAY['queued','running']) AND id IN (SELECT id FROM active_orders WHERE status = ANY(ARRAY['queued','running'])) ORDER BY id DESC LIMIT 100`},
	{"list failed (a rare terminal status)", `SELECT * FROM orders WHERE status = ANY(ARRAY['failed']) AND id IN ((SELECT order_id FROM order_events WHERE status = 'failed' AND status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired') ORDER BY order_id DESC LIMIT 101)) ORDER BY id DESC LIMIT 101`},
	{"list succeeded and failed", `SELECT * FROM orders WHERE status = ANY(ARRAY['succeeded','failed']) AND id IN ((SELECT order_id FROM order_events WHERE status = 'succeeded' AND status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired') ORDER BY order_id DESC LIMIT 101) UNION ALL (SELECT order_id FROM order_events WHERE status = 'failed' AND status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired') ORDER BY order_id DESC LIMIT 101)) ORDER BY id DESC LIMIT 101`},
}

var (
	execTimeRE = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)
	seqScanRE  = regexp.MustCompile(`Seq Scan on (\w+)`)
)

// explainAll runs explained against serve's PostgreSQL, writes the plans to
// dir/explain-<history>.txt and returns a markdown table: execution time
// and the sequential scans of each.
func explainAll(ctx context.Context, srv *server, dir string, history int) (string, error) {
	var script strings.Builder
	script.WriteString(`SELECT id, host FROM orders WHERE status = 'succeeded' AND host = 'bench' ORDER BY id DESC LIMIT 1 \gset` + "\n")
	for _, q := range explained {
		fmt.Fprintf(&script, "\\echo ==== %s\nBEGIN;\nEXPLAIN (ANALYZE, BUFFERS) %s;\nROLLBACK;\n", q.name, q.sql)
	}
	cmd := exec.CommandContext(ctx, "psql", "-X", "-v", "ON_ERROR_STOP=1", srv.dsn)
	cmd.Stdin = strings.NewReader(script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql EXPLAIN: %v: %.2000s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("explain-%d.txt", history)), out, 0o644); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n#### EXPLAIN ANALYZE at %d orders of history (plans in explain-%d.txt)\n\n| statement | execution | sequential scans |\n|---|---|---|\n", history, history)
	for _, part := range strings.Split(string(out), "==== ")[1:] {
		name, plan, _ := strings.Cut(part, "\n")
		t := "?"
		if m := execTimeRE.FindStringSubmatch(plan); m != nil {
			t = m[1] + " ms"
		}
		var seqs []string
		for _, m := range seqScanRE.FindAllStringSubmatch(plan, -1) {
			seqs = append(seqs, m[1])
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", name, t, strings.Join(seqs, ", "))
	}
	return b.String(), nil
}
