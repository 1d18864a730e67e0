package postgres_test

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestConnectionRefusedByTheServerIsUnavailable checks that a connection
// the server refuses with an error of its own is a 503, whatever its
// SQLSTATE: a PostgreSQL whose disk is full refuses every new connection
// with XX000 ("could not write init file"), which the API answered with
// 500 internal. A database closed to connections (55000) is refused the
// same way, at the same step, and is what the test can set up.
func TestConnectionRefusedByTheServerIsUnavailable(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	// A database may not be closed from a session on itself.
	admin, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{cfg.Database}.Sanitize()+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	// A pool that has not connected yet: the insert must open a connection.
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h1", Command: "true", Principal: "p", Source: "rest"}
	_, err = postgres.New(pool).InsertOrder(ctx, o)
	var oe *order.Error
	if !errors.As(err, &oe) || oe.Code != order.CodeUnavailable {
		t.Fatalf("insert on a connection the server refused: %v, want code %s", err, order.CodeUnavailable)
	}
}

// TestStatementOnAColumnGoneIsUnavailable: a schema rolled back under a
// running process (hF11's downgrade: 00025's down drops orders.parent_run,
// which every insert names) failed each submission as 500 `internal`, and
// the fence a 503 would start looked the order up on the same schema. The
// insert is 503 `unavailable`, nothing recorded, and SchemaSuspect is
// closed for the process's schema watch; RearmSchemaSuspect opens it again.
func TestStatementOnAColumnGoneIsUnavailable(t *testing.T) {
	ctx := testenv.Context(t)
	store, pool := testenv.Store(t, testenv.Postgres(t))
	// CASCADE: migration 00027's index and row policy name the column
	// (its down drops them before 00025's drops the column).
	if _, err := pool.Exec(ctx, `ALTER TABLE orders DROP COLUMN parent_run CASCADE`); err != nil {
		t.Fatal(err)
	}
	seen := postgres.SchemaSuspect()
	o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h1", Command: "true", Principal: "p", Source: "rest"}
	_, err := store.InsertOrder(ctx, o)
	var oe *order.Error
	if !errors.As(err, &oe) || oe.Code != order.CodeUnavailable {
		t.Fatalf("insert naming a dropped column: %v, want code %s", err, order.CodeUnavailable)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE id = $1`, o.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("orders with the refused insert's id: %d, %v; want none", n, err)
	}
	select {
	case <-seen:
	default:
		t.Fatal("SchemaSuspect not closed after a statement failed on a dropped column")
	}
	again := postgres.RearmSchemaSuspect(seen)
	select {
	case <-again:
		t.Error("RearmSchemaSuspect returned a closed channel")
	default:
	}
}
