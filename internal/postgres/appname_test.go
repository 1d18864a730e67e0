package postgres_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestOpenAsNamesEveryConnection: every connection of an OpenAs pool, not
// only the first, carries the process's name as its application_name,
// unless the operator named them in the URL (as a parameter or in its
// options) or in PGAPPNAME, which win.
func TestOpenAsNamesEveryConnection(t *testing.T) {
	dsn := testenv.Postgres(t)
	for _, tc := range []struct {
		name, dsn, env, want string
	}{
		{"named by the process", dsn, "", "orderly-worker-web-3"},
		{"named in the url", dsn + "&application_name=fleet-a", "", "fleet-a"},
		{"named in PGAPPNAME", dsn, "fleet-b", "fleet-b"},
		// PostgreSQL applies a startup packet's parameters after its
		// options: the process's name would override this one.
		{"named in the url's options", dsn + "&options=-c%20application_name%3Dfleet-c", "", "fleet-c"},
		{"named in the url's options, dashed", dsn + "&options=--Application-Name%3Dfleet-d", "", "fleet-d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("PGAPPNAME", tc.env)
			}
			ctx := testenv.Context(t)
			pool, err := postgres.OpenAs(ctx, tc.dsn, "orderly-worker-web-3")
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			// Two connections held at once: the pool opens a second one.
			a, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Release()
			b, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Release()
			for i, c := range []*pgxpool.Conn{a, b} {
				var got string
				if err := c.QueryRow(ctx, `SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()`).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("connection %d: application_name %q, want %q", i+1, got, tc.want)
				}
			}
		})
	}
}
