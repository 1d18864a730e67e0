package testenv

import (
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgresRightAfterTheClusterCrashed: a test that crashes the
// cluster (a backend killed with SIGKILL, as the worker's
// TestPostgresCrashAtEachStepOfAnOrder does) broke the admin pool's idle
// connection, which pgxpool checks only after a second idle: the next
// CREATE or DROP DATABASE within that second failed ("write: broken
// pipe") and failed a test that had nothing to do with the crash.
func TestPostgresRightAfterTheClusterCrashed(t *testing.T) {
	dsn := Postgres(t)
	ctx := Context(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	Postgres(t) // the admin pool's connection, used a moment ago
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
	// Through the admin pool's broken connection, and while the cluster
	// recovers; then the drops of the three at the test's end.
	dsn = Postgres(t)
	c, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("the database made after the crash: %v", err)
	}
	_ = c.Close(ctx)
}
