package postgres_test

import (
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestScanOrderAsPgxScans holds scanOrder, which keeps its scan plans per
// connection, to pgx's own Scan into the same fields with plans built for
// every query (ScanOrderByPgx, the scan before): the same order, field
// for field, for a row with every column filled (outputs, JSON, arrays,
// times, an unknown policy key) and one with every nullable column NULL,
// read again and again on one connection between statements whose
// columns differ in type (plans rebuilt) or number (an extra column), and
// on a pool that keeps no plans (pgx's Scan).
func TestScanOrderAsPgxScans(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	pool, err := postgres.OpenTweaked(ctx, dsn, func(c *pgxpool.Config) { c.MaxConns = 1 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	plain, err := pgxpool.New(ctx, dsn) // no AfterConnect: no plans kept, times in the local zone
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)

	script, _ := json.Marshal(map[string]any{"body": []byte("echo hi\n"),
		"files": []order.File{{Path: "a/b.txt", Mode: 0o640, Data: []byte("data")}}})
	filled := map[string]any{
		"id": "0190a6d4-8f59-7c3e-9b1d-2f4e5a6b7c8d", "batch_id": "0190a6d4-8f59-7c3e-9b1d-000000000001",
		"kind": "script", "host": "web-1", "status": "succeeded", "command": "/bin/echo",
		"args": []string{"a", "", "ü"}, "env_names": []string{"A", "B"}, "env": map[string]string{"A": "1", "B": ""},
		"stdin": `\x00ff10`, "stdout_encode": "base64", "stderr_encode": "text",
		"capture_stdout": true, "capture_stderr": false, "timeout_ms": 90061, "run_as": "deploy",
		"dry_run": true, "idempotent": true, "expires_at": "2026-12-04T13:14:15.123456+02:00", "max_output": 1 << 20,
		"principal": "alice", "source": "nats", "correlation_id": "corr-1", "idempotency_key": "key-1",
		"policy":       map[string]any{"decision": "allow", "matched": []string{"r1", "r2"}, "from_the_future": 1},
		"submitted_at": "2026-12-04T12:00:00.000001Z", "started_at": "2026-12-04T12:00:01Z",
		"finished_at": "2026-12-04T12:00:02.5Z", "attempt": 3, "stream_seq": 4_000_000_000, "worker": "w-7",
		"exit_code": -1, "signal": "KILL", "duration_ms": 1500, "error": "killed",
		"stdout": `\x68690a`, "stdout_bytes": 70000, "stdout_truncated": true, "stdout_sha256": `\x` + hex.EncodeToString(make([]byte, 32)),
		"stderr": `\x`, "stderr_bytes": 0, "stderr_truncated": false, "stderr_sha256": `\x01`,
		"processes": map[string]any{"pids": []any{1.0, 2.0}, "tree": map[string]any{"x": nil}},
		"runbook":   "deploy.yaml", "runbook_sha256": "abc123", "script": `\x` + hex.EncodeToString(script),
		"action": "restart", "action_params": map[string]string{"svc": "nginx"}, "action_secrets": map[string]string{"tok": "s3cret"},
		"action_secret_names": []string{"tok"},
	}
	// A queued order as InsertOrder records it: every nullable column NULL.
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h", Command: "true",
		Timeout: time.Minute, Principal: "p", Source: "rest"}
	if _, err := postgres.New(pool).InsertOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	var nulls map[string]any
	if err := pool.QueryRow(ctx, `SELECT to_jsonb(o) FROM orders o WHERE id = $1`, o.ID).Scan(&nulls); err != nil {
		t.Fatal(err)
	}
	// A row of orders' own column types, with no table's constraints.
	sel := `SELECT ` + postgres.OrderCols + ` FROM jsonb_populate_record(NULL::orders, $1::jsonb)`
	extra := `SELECT ` + postgres.OrderCols + `, 'x'::text FROM jsonb_populate_record(NULL::orders, $1::jsonb)`
	retyped := `SELECT ` + strings.NewReplacer("id, batch_id,", "id, batch_id::text,",
		"timeout_ms,", "timeout_ms::int4,").Replace(postgres.OrderCols) +
		` FROM jsonb_populate_record(NULL::orders, $1::jsonb)`

	for _, row := range []map[string]any{filled, nulls} {
		arg, _ := json.Marshal(row)
		for _, p := range []*pgxpool.Pool{pool, plain} {
			want, err := postgres.ScanOrderByPgx(p.QueryRow(ctx, sel, arg))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				got, err := postgres.ScanOrder(p.QueryRow(ctx, sel, arg))
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("read %d of %s:\n got %+v\nwant %+v", i, row["id"], got, want)
				}
				var x string
				if got, err = postgres.ScanOrder(p.QueryRow(ctx, extra, arg), &x); err != nil || x != "x" || !reflect.DeepEqual(got, want) {
					t.Fatalf("with an extra column: %q, %v\n got %+v\nwant %+v", x, err, got, want)
				}
				if got, err = postgres.ScanOrder(p.QueryRow(ctx, retyped, arg)); err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("with columns of other types: %v\n got %+v\nwant %+v", err, got, want)
				}
			}
			rows, err := p.Query(ctx, sel+` UNION ALL `+sel, arg)
			if err != nil {
				t.Fatal(err)
			}
			list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*order.Order, error) { return postgres.ScanOrder(r) })
			if err != nil || len(list) != 2 || !reflect.DeepEqual(list[0], want) || !reflect.DeepEqual(list[1], want) {
				t.Fatalf("list: %d, %v", len(list), err)
			}
		}
	}
}

// TestDecodeDecisionKeptIsOwnCopy: a decision read again comes from
// decodeDecision's kept ones, each time as a copy of its own: a change to
// one order's decision (its matched rules, deny rules, unknown keys) does
// not reach the next order read with the same JSON, and a list that was
// empty stays empty, one that was null stays nil.
func TestDecodeDecisionKeptIsOwnCopy(t *testing.T) {
	raw := []byte(`{"decision":"allow","matched":["r1","r2"],"deny":[{"rule":"r1","regex":"^rm "}],"later":true}`)
	first, err := postgres.DecodeDecision(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := order.Decision{Decision: "allow", Matched: []string{"r1", "r2"},
		Deny: []order.DenyRule{{Rule: "r1", Regex: "^rm "}}, Unknown: []string{"later"}}
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("first read: %+v", first)
	}
	first.Matched[0], first.Deny[0].Regex, first.Unknown[0] = "changed", "changed", "changed"
	for i := range 2 {
		again, err := postgres.DecodeDecision(raw)
		if err != nil || !reflect.DeepEqual(again, want) {
			t.Fatalf("read %d again: %+v, %v", i+2, again, err)
		}
		again.Matched[1] = "changed"
	}
	for raw, matched := range map[string][]string{`{"decision":"allow","matched":[]}`: {}, `{"decision":"deny","matched":null}`: nil} {
		for range 2 {
			d, err := postgres.DecodeDecision([]byte(raw))
			if err != nil || !reflect.DeepEqual(d.Matched, matched) || d.Deny != nil || d.Unknown != nil {
				t.Fatalf("%s: %#v, %v", raw, d, err)
			}
		}
	}
}
