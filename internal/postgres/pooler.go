package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// describeBehindPooler returns pool, or, when a connection pooler stands
// between it and PostgreSQL and dsn does not choose a
// default_query_exec_mode itself, a pool of cfg that sends its statements
// unnamed (pgx's cache_describe) in its place, pool closed. pgx's default
// prepares each statement on its connection under a name derived from its
// text; behind PgBouncer in transaction mode many clients share one
// server connection, and a client's transactions go to any of them: a
// worker stopped at its start with `prepared statement "stmtcache_…"
// already exists` (SQLSTATE 42P05, another had prepared it there) or
// `… does not exist` (26000, it had prepared it on another). A mode dsn
// names is kept: PgBouncer 1.21 and later with max_prepared_statements
// takes pgx's prepared statements. The test runs on the pool's first
// connection, which the pool keeps: one round trip more at the start on
// a direct connection, and a second pool behind a pooler.
func describeBehindPooler(ctx context.Context, pool *pgxpool.Pool, cfg *pgxpool.Config, dsn string) (*pgxpool.Pool, error) {
	if cfg.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeCacheStatement {
		return pool, nil
	}
	if explicit, err := choosesExecMode(dsn); err != nil || explicit {
		return pool, err
	}
	pooled, err := BehindPooler(ctx, pool)
	if err != nil || !pooled {
		return pool, err
	}
	pool.Close()
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	return pgxpool.NewWithConfig(ctx, cfg)
}

// preparedStatementLost reports one of pgx's own prepared statements
// (its cache names them stmtcache_…) found already prepared (42P05) or
// missing (26000) on the session that ran it: it was prepared on
// another, which only a connection pooler in between does. With no mode
// in database_url the store sends its statements unnamed behind a pooler
// (describeBehindPooler), so it is a mode the URL names that the pooler
// cannot keep (cache_statement behind PgBouncer before 1.21, or without
// max_prepared_statements): a worker stopped at its start with the bare
// SQLSTATE, which did not say which setting to change.
func preparedStatementLost(e *pgconn.PgError) bool {
	return (e.Code == "42P05" || e.Code == "26000") && strings.Contains(e.Message, `"stmtcache_`)
}

// pooledStatementsHint is what preparedStatementLost's errors add.
const pooledStatementsHint = "a connection pooler between orderly and PostgreSQL does not keep pgx's prepared statements: " +
	"remove default_query_exec_mode from database_url (behind a pooler orderly then sends its statements unnamed) " +
	"or set it to cache_describe, or set PgBouncer's max_prepared_statements (1.21 and later)"

// choosesExecMode reports whether dsn sets default_query_exec_mode.
// pgconn keeps the settings it does not know (pgx's among them) as the
// connection's runtime parameters, whatever the DSN's form.
func choosesExecMode(dsn string) (bool, error) {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return false, RedactParseError(fmt.Errorf("parse database url: %w", err))
	}
	_, ok := c.RuntimeParams["default_query_exec_mode"]
	return ok, nil
}

// BehindPooler reports whether pool's connections reach PostgreSQL
// through a connection pooler: whether the backend that answers on one
// of them is another process than the one the connection's start named.
// PostgreSQL sends its backend's pid in BackendKeyData, and a pooler
// (PgBouncer in any pool mode, Odyssey, PgCat, Supavisor, RDS Proxy)
// sends a key of its own, since it hands the client's queries to server
// connections of its choosing and must route a cancel itself. The
// server's version and parameters do not tell: PgBouncer passes the
// server's on (its SHOW VERSION answers only on its admin console). The
// query goes in the simple protocol, which prepares nothing.
//
// The API's insert fence needs a direct connection: it ends the backend
// of an insert whose answer was lost by the pid PostgreSQL gave the
// connection (insertOutcome), and behind a pooler that pid is the
// pooler's, so the fence ends nothing while the insert may still commit.
func BehindPooler(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	var backend int64
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&backend); err != nil {
		return false, err
	}
	return uint32(backend) != conn.Conn().PgConn().PID(), nil
}
