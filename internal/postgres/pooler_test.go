package postgres_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStoreBehindATransactionPooler runs an order's path on the store
// opened through a real PgBouncer in transaction mode, with the setting
// docs/scaling.md gives the workers there: pgx's default names a
// prepared statement per connection, and the second worker sharing a
// server connection failed to start ("prepared statement
// \"stmtcache_…\" already exists"). The setting must reach pgx from
// database_url, and the store must work with statements sent unnamed,
// the result write of a large output (the staging table, COPY)
// included, each transaction on whichever server connection is free.
func TestStoreBehindATransactionPooler(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	bouncer := testenv.StartPgBouncer(t, dsn, 2)
	pool, err := postgres.Open(ctx, bouncer.DSN(databaseOf(t, dsn), "default_query_exec_mode=cache_describe"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if got := pool.Config().ConnConfig.DefaultQueryExecMode; got != pgx.QueryExecModeCacheDescribe {
		t.Fatalf("query exec mode %v, want cache_describe from the URL", got)
	}
	e := &storeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool)}
	o := e.insert("web-1", "alice", nil)
	e.own("web-1", "w1")
	c := e.claim(o.ID, "w1")
	// The process record, in its transaction that does not wait for the
	// flush (BEGIN, SET LOCAL, the insert, COMMIT in one batch).
	p := postgres.Process{PID: 4242, PGID: 4242, StartTime: 99, BootID: "b"}
	if err := e.store.RecordProcess(ctx, o.ID, c.Attempt, "w1", p); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Complete(ctx, o.ID, c.Attempt, succeeded("out")); err != nil {
		t.Fatal(err)
	}
	if got := e.get(o.ID); got.Status != "succeeded" || got.Result == nil || string(got.Result.Stdout.Content) != "out" {
		t.Errorf("order after its run: %+v", got)
	}
	// A record written with the result.
	o = e.insert("web-1", "alice", nil)
	c = e.claim(o.ID, "w1")
	f := succeeded("out")
	f.Record, f.Started = &p, time.Now()
	if err := e.store.Complete(ctx, o.ID, c.Attempt, f); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.ProcessOf(ctx, o.ID, c.Attempt); err != nil || got == nil || got.PID != p.PID {
		t.Errorf("the record written with the result: %+v, %v", got, err)
	}
	// Outputs of 1 MiB and more are streamed into a temporary table
	// (COPY) in the result's transaction: each time on whichever server
	// connection the pooler lends, where the table may or may not exist
	// yet.
	for i := range 4 {
		o = e.insert("web-1", "alice", nil)
		c = e.claim(o.ID, "w1")
		big := bytes.Repeat([]byte{byte('a' + i)}, 1<<20+i)
		f := succeeded("")
		f.Result.Stdout = order.Output{Content: big, Bytes: int64(len(big))}
		if err := e.store.Complete(ctx, o.ID, c.Attempt, f); err != nil {
			t.Fatalf("large output %d: %v", i, err)
		}
		if got := e.get(o.ID); got.Result == nil || !bytes.Equal(got.Result.Stdout.Content, big) {
			t.Fatalf("large output %d not stored whole", i)
		}
	}
}

// TestStoreSendsStatementsUnnamedBehindAPoolerItself opens two stores
// through a PgBouncer in transaction mode with one server connection,
// with a database_url that says nothing of pgx's query mode, and runs an
// order's path on each in turn: the store must see the pooler (its
// BackendKeyData is not the backend's) and send its statements unnamed.
// With pgx's default the second store's first statement failed: the
// first had prepared it under the same name on the one server
// connection (SQLSTATE 42P05). A mode the URL names is kept, and a
// direct connection keeps pgx's default.
func TestStoreSendsStatementsUnnamedBehindAPoolerItself(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	bouncer := testenv.StartPgBouncer(t, dsn, 1)
	via := bouncer.DSN(databaseOf(t, dsn), "")
	var envs []*storeEnv
	for range 2 {
		pool, err := postgres.Open(ctx, via)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if got := pool.Config().ConnConfig.DefaultQueryExecMode; got != pgx.QueryExecModeCacheDescribe {
			t.Errorf("behind the pooler: query exec mode %v, want cache_describe", got)
		}
		envs = append(envs, &storeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool)})
	}
	for i, e := range append(envs, envs...) {
		host := "web-" + string(rune('1'+i%2))
		o := e.insert(host, "alice", nil)
		e.own(host, "w1")
		c := e.claim(o.ID, "w1")
		if err := e.store.Complete(ctx, o.ID, c.Attempt, succeeded("out")); err != nil {
			t.Fatalf("store %d: %v", i%2+1, err)
		}
		if got := e.get(o.ID); got.Status != "succeeded" {
			t.Errorf("store %d: order %s", i%2+1, got.Status)
		}
	}
	for _, tc := range []struct {
		name string
		dsn  string
		want pgx.QueryExecMode
	}{
		{"direct", dsn, pgx.QueryExecModeCacheStatement},
		{"behind the pooler, the URL's mode", bouncer.DSN(databaseOf(t, dsn), "default_query_exec_mode=cache_statement"), pgx.QueryExecModeCacheStatement},
	} {
		pool, err := postgres.Open(ctx, tc.dsn)
		if err != nil {
			t.Fatal(err)
		}
		if got := pool.Config().ConnConfig.DefaultQueryExecMode; got != tc.want {
			t.Errorf("%s: query exec mode %v, want %v", tc.name, got, tc.want)
		}
		pool.Close()
	}
}

// databaseOf is the database name of dsn.
func databaseOf(t *testing.T, dsn string) string {
	t.Helper()
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return c.Database
}

// TestStoreNamesTheSettingWhenAPoolerLosesItsStatements opens two stores
// through PgBouncer in transaction mode with one server connection and a
// database_url that asks for pgx's prepared statements
// (default_query_exec_mode=cache_statement), which PgBouncer 1.18 cannot
// keep: the second store's first statement finds the first's prepared
// under the same name. Its error must say what to change in
// database_url; a worker stopped at its start with the bare SQLSTATE.
func TestStoreNamesTheSettingWhenAPoolerLosesItsStatements(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	via := testenv.StartPgBouncer(t, dsn, 1).DSN(databaseOf(t, dsn), "default_query_exec_mode=cache_statement")
	var err error
	for i := range 2 {
		pool, oerr := postgres.Open(ctx, via)
		if oerr != nil {
			t.Fatal(oerr)
		}
		t.Cleanup(pool.Close)
		if got := pool.Config().ConnConfig.DefaultQueryExecMode; got != pgx.QueryExecModeCacheStatement {
			t.Fatalf("store %d: query exec mode %v, want the URL's cache_statement", i+1, got)
		}
		err = postgres.New(pool).CheckSchema(ctx)
		if i == 0 && err != nil {
			t.Fatalf("the first store alone on the server connection: %v", err)
		}
	}
	if err == nil {
		t.Fatal("the second store ran a statement the first had prepared on the same server connection under the same name")
	}
	for _, want := range []string{"SQLSTATE 42P05", "database_url", "default_query_exec_mode", "max_prepared_statements"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
