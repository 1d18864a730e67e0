package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// rereadPassfile has each new connection of cfg take its password from
// the pgpass file as it is now. pgx reads the file once, when it parses
// dsn: after a rotation (ALTER ROLE, a new line in the file) a running
// API or worker kept the old password, and every connection it made after
// (PostgreSQL restarted, one replaced after its lifetime) was refused
// until the process restarted; a reload did not help (docs/deploy.md,
// "Adding, retiring and re-keying a host"). A file that can no longer be
// read, or no longer names the login, keeps the password read at start.
func rereadPassfile(cfg *pgxpool.Config, dsn string) {
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		fresh, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return nil
		}
		if fresh.Password != "" {
			cc.Password = fresh.Password
		}
		return nil
	}
}
