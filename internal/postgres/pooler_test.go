package postgres_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStoreBehindATransactionPooler runs an order's path on the store
// opened with the setting docs/scaling.md gives the workers behind
// PgBouncer in transaction mode: pgx's default names a prepared statement
// per connection, and the second worker sharing a server connection
// failed to start ("prepared statement \"stmtcache_…\" already exists").
// The setting must reach pgx from database_url, and the store must work
// with statements sent unnamed.
func TestStoreBehindATransactionPooler(t *testing.T) {
	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, testenv.Postgres(t)+"&default_query_exec_mode=cache_describe")
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
}
