package postgres_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// statementCounter counts the statements a pool sends: each query sent
// alone and each query of a batch.
type statementCounter struct{ n atomic.Int32 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (*statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (*statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (c *statementCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.n.Add(1)
}

func (*statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// countedPool is a pool on a database of t's own whose statements the
// returned counter counts.
func countedPool(t *testing.T) (*pgxpool.Pool, *statementCounter) {
	t.Helper()
	sent := &statementCounter{}
	pool, err := postgres.OpenTweaked(testenv.Context(t), testenv.Postgres(t), func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = sent })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, sent
}

// TestClaimOfAFreeRowIsOneStatement: a claim of an order whose row no
// other session holds is one statement, the fenced claim that takes the
// row's lock itself (claimFree), sent as a plain query; with the previous
// order's result before it (the worker's pipelined step), two, in one
// round trip and the batch's own transaction. The row's lock sent as a
// statement of its own before the claim (claimLockSQL) was one statement
// more per order for PostgreSQL and a batch for the worker
// (docs/benchmarks.md, the thirty-first round); it is sent now only after
// the alone form claimed nothing, and the fence after the lock's wait is
// TestClaimWaitingForARowLockIsFencedAfterTheWait's.
func TestClaimOfAFreeRowIsOneStatement(t *testing.T) {
	ctx := testenv.Context(t)
	pool, sent := countedPool(t)
	e := &storeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool)}
	e.own("h1", "w1")
	first, next := e.insert("h1", "alice", nil), e.insert("h1", "alice", nil)

	sent.n.Store(0)
	o, claimed, err := e.store.Claim(ctx, first.ID, "w1", 1)
	if err != nil || !claimed || o.Status != order.StatusRunning || o.Attempt != 1 {
		t.Fatalf("claim: claimed %v, %v, %+v", claimed, err, o)
	}
	if n := sent.n.Load(); n != 1 {
		t.Errorf("a claim sent %d statements, want 1 (the claim, which takes the row's lock)", n)
	}

	sent.n.Store(0)
	step, err := e.store.CompleteAndClaim(ctx, first.ID, o.Attempt, succeeded("x"), next.ID, "w1", 2)
	if err != nil || step.Done != nil || !step.Claimed || step.Next.Status != order.StatusRunning {
		t.Fatalf("complete and claim: %v, %+v", err, step)
	}
	if n := sent.n.Load(); n != 2 {
		t.Errorf("a result with the next claim sent %d statements, want 2 (the result, the claim)", n)
	}
	if got := e.get(first.ID); got.Status != order.StatusSucceeded {
		t.Errorf("the first order: %s, want succeeded", got.Status)
	}
	if got := e.get(next.ID); got.Status != order.StatusRunning || got.Attempt != 1 {
		t.Errorf("the next order: %s, attempt %d; want running, attempt 1", got.Status, got.Attempt)
	}
}
