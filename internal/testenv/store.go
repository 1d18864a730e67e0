package testenv

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/postgres"
)

// Store opens orderly's store on the database at dsn (Postgres(t),
// usually) and returns it with its pool, for the queries a test makes
// itself; the pool closes when the test ends.
func Store(t testing.TB, dsn string) (*postgres.Store, *pgxpool.Pool) {
	t.Helper()
	pool, err := postgres.Open(Context(t), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return postgres.New(pool), pool
}

// ShortInsertEpochs makes postgres.InsertEpoch 300 ms for t, so that a
// test sees an insert or key lookup that PostgreSQL holds cut within a
// second, and puts it back when t ends. The epochs are not counted until
// the test calls count (postgres.HoldInsertEpochs), once it has stopped
// the backend it looks for: counted from the start, an insert could be
// cut (and its backend ended by the fence) before a loaded machine let
// the test find it, 300 to 600 ms after it was sent. Not for parallel
// tests.
func ShortInsertEpochs(t testing.TB) (count func()) {
	epoch := postgres.InsertEpoch
	postgres.InsertEpoch = 300 * time.Millisecond
	release := postgres.HoldInsertEpochs()
	t.Cleanup(func() { release(); postgres.InsertEpoch = epoch })
	return release
}
