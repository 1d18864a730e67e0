package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestABatchIsOneTransactionInEveryExecMode: a pgx batch without BEGIN
// and COMMIT runs as one transaction in each default_query_exec_mode a
// database_url may name (the others are refused: execModeKept), so the
// claim's row
// lock is still held when its fenced claim runs (claimLocked,
// CompleteAndClaim: the lock and the claim are sent alone in a batch
// since the thirtieth round). Shown by the transaction id: the lock's
// statement and the next one of the batch report the same. pgx sends
// one Sync per batch today (one Query string in the simple protocol);
// a pgx that sent a Sync between them would commit the lock before the
// claim, and fail here, not in a fault test under load.
func TestABatchIsOneTransactionInEveryExecMode(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			pool, err := postgres.OpenTweaked(ctx, dsn, func(cfg *pgxpool.Config) { cfg.ConnConfig.DefaultQueryExecMode = mode })
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			e := &storeEnv{t: t, ctx: ctx, pool: pool, store: postgres.New(pool)}
			o := e.insert("batchtx", "alice", nil)
			// Twice: the second batch finds its statements described or
			// prepared by the first, the path of every claim after a
			// connection's first.
			for range 2 {
				b := &pgx.Batch{}
				b.Queue(`SELECT pg_current_xact_id()::text FROM orders WHERE id = $1 FOR NO KEY UPDATE`, o.ID)
				b.Queue(`SELECT pg_current_xact_id()::text, (SELECT count(*) FROM pg_locks
					WHERE pid = pg_backend_pid() AND locktype = 'transactionid' AND mode = 'ExclusiveLock')`)
				br := pool.SendBatch(ctx, b)
				var locked, next string
				var held int
				if err := br.QueryRow().Scan(&locked); err != nil {
					t.Fatalf("the lock's statement: %v", err)
				}
				if err := br.QueryRow().Scan(&next, &held); err != nil {
					t.Fatalf("the next statement: %v", err)
				}
				if err := br.Close(); err != nil {
					t.Fatal(err)
				}
				if locked != next || held != 1 {
					t.Fatalf("the row lock's transaction %s, the next statement's %s (its own transaction id locked: %d): "+
						"the batch committed between them", locked, next, held)
				}
			}
		})
	}
}

// TestOpenRefusesExecModesWithoutDescribedTypes: a database_url naming
// default_query_exec_mode exec or simple_protocol is refused at Open,
// with the modes that work; the three that describe their parameters
// open. Before, such a store opened and then failed every order's insert
// ("invalid input syntax for type json": its JSON went as bytea), and a
// worker's claim succeeded while its result write failed.
func TestOpenRefusesExecModesWithoutDescribedTypes(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	with := func(mode string) string {
		if strings.Contains(dsn, "?") {
			return dsn + "&default_query_exec_mode=" + mode
		}
		return dsn + "?default_query_exec_mode=" + mode
	}
	for _, mode := range []string{"exec", "simple_protocol"} {
		pool, err := postgres.Open(ctx, with(mode))
		if err == nil {
			_, ierr := postgres.New(pool).InsertOrder(ctx, &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "execmode",
				Command: "true", Timeout: time.Minute, Principal: "alice", Source: "rest"})
			pool.Close()
			t.Errorf("default_query_exec_mode=%s opened (an order's insert then: %v), want it refused", mode, ierr)
			continue
		}
		if !strings.Contains(err.Error(), "default_query_exec_mode="+mode+" is not supported") || !strings.Contains(err.Error(), "cache_describe") {
			t.Errorf("default_query_exec_mode=%s refused with %q, want the setting and the modes that work named", mode, err)
		}
	}
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec"} {
		pool, err := postgres.Open(ctx, with(mode))
		if err != nil {
			t.Errorf("default_query_exec_mode=%s: %v, want it opened", mode, err)
			continue
		}
		pool.Close()
	}
}
