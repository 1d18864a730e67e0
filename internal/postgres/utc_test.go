package postgres_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestTimesScanInUTC: every timestamptz the store reads is in UTC,
// whatever the process's TZ and the session's TimeZone (here Asia/
// Kathmandu, +05:45), in binary and in text, so answers write every
// instant the same way on every replica.
func TestTimesScanInUTC(t *testing.T) {
	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET timezone = 'Asia/Kathmandu'`); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 12, 2, 13, 0, 0, 123456000, time.UTC)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		var got time.Time
		var maybe *time.Time
		if err := conn.QueryRow(ctx, `SELECT $1::timestamptz, $1::timestamptz`, mode, want).Scan(&got, &maybe); err != nil {
			t.Fatal(err)
		}
		for _, g := range []time.Time{got, *maybe} {
			if !g.Equal(want) || g.Location() != time.UTC {
				t.Errorf("%v: read %s (%s), want %s in UTC", mode, g.Format(time.RFC3339Nano), g.Location(), want.Format(time.RFC3339Nano))
			}
		}
	}
}
