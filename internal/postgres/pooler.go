package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// describeBehindPooler makes the pool send its statements unnamed
// (pgx's cache_describe) when a connection pooler stands between it and
// PostgreSQL and dsn does not choose a default_query_exec_mode itself.
// pgx's default prepares each statement on its connection under a name
// derived from its text; behind PgBouncer in transaction mode many
// clients share one server connection, and the second to prepare a
// statement there failed (`prepared statement "stmtcache_…" already
// exists`, SQLSTATE 42P05), which stopped a worker at its start or in
// the middle of its work. A mode dsn names is kept: PgBouncer 1.21 and
// later with max_prepared_statements takes pgx's prepared statements.
// It reports whether it saw a pooler.
func describeBehindPooler(ctx context.Context, cfg *pgxpool.Config, dsn string) (bool, error) {
	if explicit, err := choosesExecMode(dsn); err != nil || explicit {
		return false, err
	}
	pooled, err := behindPooler(ctx, cfg.ConnConfig.Config.Copy())
	if err != nil {
		return false, err
	}
	if pooled && cfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	}
	return pooled, nil
}

// choosesExecMode reports whether dsn sets default_query_exec_mode.
// pgconn keeps the settings it does not know (pgx's among them) as the
// connection's runtime parameters, whatever the DSN's form.
func choosesExecMode(dsn string) (bool, error) {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return false, fmt.Errorf("parse database url: %w", err)
	}
	_, ok := c.RuntimeParams["default_query_exec_mode"]
	return ok, nil
}

// behindPooler connects once with cfg and reports whether the backend
// that answers is another process than the one the connection's start
// named: PostgreSQL sends its backend's pid in BackendKeyData, and a
// pooler (PgBouncer, in any pool mode; Odyssey, PgCat, Supavisor, RDS
// Proxy) sends a key of its own, since it hands the client's queries
// to server connections of its choosing and must route a cancel
// itself. The server's version or parameters do not tell: PgBouncer
// passes the server's on (its SHOW VERSION answers only on its admin
// console). One query, in the simple protocol, which every pooler
// passes on.
func behindPooler(ctx context.Context, cfg *pgconn.Config) (bool, error) {
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	res, err := conn.Exec(ctx, "SELECT pg_backend_pid()").ReadAll()
	if err != nil {
		return false, err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return false, fmt.Errorf("pg_backend_pid(): unexpected answer")
	}
	backend, err := strconv.ParseUint(string(res[0].Rows[0][0]), 10, 32)
	if err != nil {
		return false, fmt.Errorf("pg_backend_pid(): %w", err)
	}
	return uint32(backend) != conn.PID(), nil
}

// BehindPooler reports whether pool's connections reach PostgreSQL
// through a connection pooler (behindPooler's test, on one of them). The
// API's insert fence needs them not to: it ends the backend of an insert
// whose answer was lost by the pid PostgreSQL gave the connection
// (insertOutcome), and behind a pooler that pid is the pooler's, so the
// fence ends nothing while the insert may still commit.
func BehindPooler(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return false, translate("acquire a connection", err)
	}
	defer conn.Release()
	var backend int64
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return false, translate("read the backend's pid", err)
	}
	return uint32(backend) != conn.Conn().PgConn().PID(), nil
}
