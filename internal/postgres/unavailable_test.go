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
