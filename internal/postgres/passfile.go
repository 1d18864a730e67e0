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
// The same parse gives the connection the TLS files as they are now
// (tlsFiles).
func rereadPassfile(cfg *pgxpool.Config, dsn string) {
	files := newTLSFiles(dsn, &cfg.ConnConfig.Config)
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		var look tlsLook
		if files != nil {
			look = files.now()
		}
		fresh, err := pgconn.ParseConfig(dsn)
		if files != nil {
			files.apply(&cc.Config, look, fresh, err)
		}
		if err != nil {
			return nil
		}
		if fresh.Password != "" {
			cc.Password = fresh.Password
		}
		return nil
	}
}
