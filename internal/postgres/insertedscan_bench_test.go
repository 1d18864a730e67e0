package postgres_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// BenchmarkInsertedTimesScan reads two times as InsertOrder's statement
// returns them, scanned by pgx's Scan (plans built for every row, as
// before) and as InsertOrder scans them now (plans kept per connection).
// Allocations per read are the measure (docs/benchmarks.md, "The async
// submit, counted again").
func BenchmarkInsertedTimesScan(b *testing.B) {
	ctx := testenv.Context(b)
	pool, err := postgres.Open(ctx, testenv.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	const q = `SELECT now(), now() + interval '1 hour'`
	var sub time.Time
	var exp *time.Time
	b.Run("pgx", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := pool.QueryRow(ctx, q).Scan(&sub, &exp); err != nil || exp == nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kept", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := postgres.ScanInsertedTimes(pool.QueryRow(ctx, q), &sub, &exp); err != nil || exp == nil {
				b.Fatal(err)
			}
		}
	})
}
