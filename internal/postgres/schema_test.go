package postgres_test

import (
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/testenv"
)

// A database that was never migrated gets the error that says what to do,
// not PostgreSQL's "relation does not exist" (the schema check's query
// used to name the table in a subquery, which PostgreSQL resolves while
// planning even when it would not run it).
func TestCheckSchemaOnAnUnmigratedDatabase(t *testing.T) {
	store, pool := testenv.Store(t, testenv.Postgres(t))
	ctx := testenv.Context(t)
	if err := store.CheckSchema(ctx); err != nil {
		t.Fatalf("migrated database: %v", err)
	}
	if _, err := pool.Exec(ctx, `DROP TABLE goose_db_version`); err != nil {
		t.Fatal(err)
	}
	err := store.CheckSchema(ctx)
	if err == nil || !strings.Contains(err.Error(), "orderly migrate up") || strings.Contains(err.Error(), "42P01") {
		t.Fatalf("unmigrated database: %v, want the advice to run orderly migrate up", err)
	}
}
