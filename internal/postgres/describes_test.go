package postgres_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// prepareCount counts pgx's prepares (a statement cache's misses, each a
// Parse and a Describe sent to PostgreSQL) of the statements whose text
// has a prefix, by the backend that prepared them.
type prepareCount struct {
	prefix string
	mu     sync.Mutex
	by     map[uint32]int
}

func (c *prepareCount) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (c *prepareCount) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *prepareCount) TracePrepareStart(ctx context.Context, conn *pgx.Conn, d pgx.TracePrepareStartData) context.Context {
	if strings.HasPrefix(d.SQL, c.prefix) {
		c.mu.Lock()
		c.by[conn.PgConn().PID()]++
		c.mu.Unlock()
	}
	return ctx
}

func (c *prepareCount) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

// TestReReadDescribedOncePerConnection: the sync answer's re-read
// (GetOrderLean) is prepared, and so described by PostgreSQL, once on
// each of the pool's connections, then served from that connection's
// statement cache, however many reads follow. Profiles of
// TestSubmitAllocations showed pgconn.convertRowDescription under it at
// about one allocation per order in some runs: one string per column of
// the statement (51), for the two connections that carried it first
// within the hundred orders counted, not a describe per order
// (docs/decisions.md, hA24). A text that changed from read to read, a
// cache too small for the store's statements or an exec mode that
// describes each time would fail it.
func TestReReadDescribedOncePerConnection(t *testing.T) {
	ctx := testenv.Context(t)
	count := &prepareCount{prefix: "SELECT id, batch_id, kind, host, status, command, args, env_names, env, stdin,", by: map[uint32]int{}}
	pool, err := postgres.OpenTweaked(ctx, testenv.Postgres(t), func(cfg *pgxpool.Config) {
		cfg.MaxConns = 4
		cfg.ConnConfig.Tracer = count
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	store := postgres.New(pool)
	e := &storeEnv{t: t, ctx: ctx, pool: pool, store: store}
	o := e.insert("h1", "alice", func(o *order.Order) { o.Command = "true" })

	// Four readers at once, so that every connection of the pool reads.
	const readers, reads = 4, 100
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			for range reads {
				if _, err := store.GetOrderLean(ctx, o.ID); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	count.mu.Lock()
	defer count.mu.Unlock()
	total := 0
	for pid, n := range count.by {
		total += n
		if n != 1 {
			t.Errorf("backend %d prepared the re-read %d times, want once", pid, n)
		}
	}
	if total == 0 || total > int(pool.Stat().TotalConns()) {
		t.Errorf("the re-read was prepared %d times for %d reads on %d connections, want once per connection",
			total, readers*reads, pool.Stat().TotalConns())
	}
	t.Logf("%d reads: the re-read prepared %d times, on %d connections", readers*reads, total, pool.Stat().TotalConns())
}
