package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// walMark is where serve's PostgreSQL was in its WAL, and how many
// transactions it had committed, at one moment: two marks around a run
// give its WAL bytes and commits, every session's (the API's periodic
// jobs included), which a change to the per-order statements moves.
type walMark struct {
	lsn     string
	commits int64
	ok      bool
}

// markWAL reads serve's WAL position; a failure leaves the mark unset
// (the bench's figures do not depend on it).
func markWAL(ctx context.Context, srv *server) walMark {
	conn, err := pgx.Connect(ctx, srv.dsn)
	if err != nil {
		return walMark{}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var m walMark
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text,
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())`).Scan(&m.lsn, &m.commits); err != nil {
		return walMark{}
	}
	m.ok = true
	return m
}

// walPerOrder is the WAL bytes between two marks per order of n, and
// the database's commits (its statistics may lag by a second).
func walPerOrder(ctx context.Context, srv *server, a, b walMark, n int) string {
	if !a.ok || !b.ok || n == 0 {
		return "?"
	}
	conn, err := pgx.Connect(ctx, srv.dsn)
	if err != nil {
		return "?"
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var bytes float64
	if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)`, b.lsn, a.lsn).Scan(&bytes); err != nil {
		return "?"
	}
	return fmt.Sprintf("%.0f B WAL, %.2f commits", bytes/float64(n), float64(b.commits-a.commits)/float64(n))
}
