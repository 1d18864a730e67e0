package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// contender is one load of the alternation.
type contender struct {
	name string
	run  func(ctx context.Context) (loadResult, error)
}

// alternate runs the groups of contenders rounds times. Within a round,
// each group's contenders run back to back, forward in even rounds and
// backward in odd ones (A B, B A, …), so that a contender and the peer it
// is compared with are always measured next to each other: on a machine
// shared with others the load changes from one second to the next, and a
// ratio of two neighbours holds where their absolute figures do not. It
// returns every contender's rounds, in order.
func alternate(ctx context.Context, rounds int, groups [][]contender) (map[string][]loadResult, error) {
	out := map[string][]loadResult{}
	for r := range rounds {
		for _, g := range groups {
			for k := range g {
				c := g[k]
				if r%2 == 1 {
					c = g[len(g)-1-k]
				}
				res, err := c.run(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s (round %d): %w", c.name, r+1, err)
				}
				out[c.name] = append(out[c.name], res)
				line := fmt.Sprintf("  round %d %-14s %7.0f/s p50 %s p99 %s", r+1, c.name, res.rate(), ms(pct(res.lat, .5)), ms(pct(res.lat, .99)))
				if len(res.lat) > 0 {
					// Each round's CPU, not only the pooled: a background
					// burn of serve's lasted two rounds of five
					// (docs/benchmarks.md, thirty-fifth round) and the
					// pooled figures blurred it.
					line += fmt.Sprintf("; server %.0f %% of a core, orderly idle meanwhile %.0f %%",
						100*res.cpu.server.Seconds()/res.wall.Seconds(), 100*res.cpu.idle.Seconds()/res.wall.Seconds())
					if res.cpu.pg > 0 {
						// By kind, each round: autovacuum or the writers
						// in one round's window is a burst the pooled
						// figure blurs (hB28).
						line += fmt.Sprintf("; PostgreSQL %.0f %% (%s)", 100*res.cpu.pg.Seconds()/res.wall.Seconds(), pgShares(res.cpu.pgBy, res.wall))
					}
				}
				progress(line)
			}
		}
	}
	return out, nil
}

// pooled merges a contender's rounds.
func pooled(rs []loadResult) loadResult {
	var p loadResult
	for _, r := range rs {
		p.add(r)
	}
	return p
}

// rawExecFor is sequential os/exec of /bin/true for d: the machine's own
// yardstick for a worker's per-host rate.
func rawExecFor(d time.Duration) contender {
	return contender{name: "raw exec", run: func(context.Context) (loadResult, error) {
		return sequential(d, func() error { return trueExec("raw exec") })
	}}
}

// floorFor is the per-host floor the contract allows: sequential exec of
// /bin/true, each followed by one fsynced single-row commit on serve's
// PostgreSQL, the one durable write per order the at-most-once claim
// needs. The worker's backlog rate ÷ this is how close it is to that floor.
func floorFor(srv *server, d time.Duration) contender {
	return contender{name: "floor", run: func(ctx context.Context) (loadResult, error) {
		conn, err := pgx.Connect(ctx, srv.dsn)
		if err != nil {
			return loadResult{}, fmt.Errorf("floor: %w", err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		// The bench's own tables are not autovacuumed: their vacuum and
		// analyze ran in whichever load's window autovacuum's minute fell,
		// an orderly load's included (hB28).
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now()) WITH (autovacuum_enabled = false)"); err != nil {
			return loadResult{}, fmt.Errorf("floor: create its table: %w", err)
		}
		return sequential(d, func() error {
			if err := trueExec("floor"); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, "INSERT INTO bench_floor (v) VALUES (1)"); err != nil {
				return fmt.Errorf("floor: commit: %w", err)
			}
			return nil
		})
	}}
}

// sequential runs step one after another for d, with the machine's CPU
// over that time.
func sequential(d time.Duration, step func() error) (loadResult, error) {
	a := machineAndBench()
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		if err := step(); err != nil {
			return loadResult{}, err
		}
		n++
	}
	return loadResult{n: n, wall: time.Since(start), cpu: delta(a, machineAndBench())}, nil
}

// trueExec runs /bin/true once, as the raw exec yardstick does.
func trueExec(what string) error {
	if err := exec.Command("/bin/true").Run(); err != nil {
		return fmt.Errorf("%s: exec of /bin/true: %w", what, err)
	}
	return nil
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchInserts is pgbench with 16 clients, each committing single-row
// inserts into a table of its own, on serve's PostgreSQL (fsync on): the
// machine's yardstick for a durable submit.
func pgbenchInserts(srv *server, d time.Duration) contender {
	return contender{name: "pgbench", run: func(ctx context.Context) (loadResult, error) {
		script, err := os.CreateTemp("", "orderly-bench-pgbench-*.sql")
		if err != nil {
			return loadResult{}, err
		}
		defer os.Remove(script.Name())
		if _, err := script.WriteString("INSERT INTO bench_pgbench (v) VALUES (1);\n"); err != nil {
			return loadResult{}, err
		}
		script.Close()
		if out, err := exec.CommandContext(ctx, "psql", "-qX", "-v", "ON_ERROR_STOP=1", srv.dsn, "-c",
			"CREATE TABLE IF NOT EXISTS bench_pgbench (id bigserial PRIMARY KEY, v int, at timestamptz DEFAULT now()) WITH (autovacuum_enabled = false)").CombinedOutput(); err != nil {
			return loadResult{}, fmt.Errorf("psql: create the pgbench table: %v: %s", err, out)
		}
		a := srv.cpu()
		out, err := exec.CommandContext(ctx, "pgbench", "-n", "-c", "16", "-j", "2", "-T", strconv.Itoa(max(1, int(d.Seconds()))),
			"-f", script.Name(), srv.dsn).CombinedOutput()
		if err != nil {
			return loadResult{}, fmt.Errorf("pgbench: %v: %s", err, out)
		}
		m := tpsRE.FindSubmatch(out)
		if m == nil {
			return loadResult{}, fmt.Errorf("pgbench: no tps in %q", strings.TrimSpace(string(out)))
		}
		tps, _ := strconv.ParseFloat(string(m[1]), 64)
		run := time.Duration(max(1, int(d.Seconds()))) * time.Second
		return loadResult{n: int(tps * run.Seconds()), wall: run, cpu: delta(a, srv.cpu())}, nil
	}}
}

// asyncLoad is 32 connections submitting to a host without a worker, each
// answer a 202 (after the PostgreSQL commit and the PubAck).
func asyncLoad(srv *server, host string, conns int, d time.Duration) contender {
	body := orderBody(host, "true")
	do := func(ctx context.Context, hc *http.Client, _ int) error {
		code, b, err := (&client{base: srv.url, token: srv.token, hc: hc}).do(ctx, http.MethodPost, "/v1/orders", body)
		if err != nil {
			return fmt.Errorf("async submit: %w", err)
		}
		if code != http.StatusAccepted {
			return fmt.Errorf("async submit: %d %.200s", code, b)
		}
		return nil
	}
	return contender{name: "async/" + strconv.Itoa(conns), run: func(ctx context.Context) (loadResult, error) {
		return closedLoop(ctx, conns, d, srv.cpu, do)
	}}
}
