package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// walMark is where serve's PostgreSQL was in its WAL, how many
// transactions it had committed, and the next transaction id it would
// hand out, at one moment: two marks around a run give its WAL bytes,
// its commits and how many of them wrote, every session's (the API's
// periodic jobs included), which a change to the per-order statements
// moves.
//
// The commits of pg_stat_database count every transaction, a read's
// too: the bench's own poll of the drain and the API's listings, which
// write no WAL and wait for no flush. A transaction is given an id only
// when it first writes, so the ids handed out between two marks are the
// transactions that wrote (committed or rolled back), the ones whose
// commit waits for the WAL's flush; pg_snapshot_xmax reads the next id
// without taking one (pg_current_xact_id would).
type walMark struct {
	lsn     string
	commits int64
	nextXid int64
	ok      bool
}

// markWAL reads serve's WAL position; a failure leaves the mark unset
// (the bench's figures do not depend on it).
func markWAL(ctx context.Context, dsn string) walMark {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return walMark{}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var m walMark
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text,
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&m.lsn, &m.commits, &m.nextXid); err != nil {
		return walMark{}
	}
	m.ok = true
	return m
}

// walPerOrder is the WAL bytes between two marks per order of n, the
// database's commits (its statistics may lag by a second) and, of them,
// the transactions that wrote.
func walPerOrder(ctx context.Context, dsn string, a, b walMark, n int) string {
	if !a.ok || !b.ok || n == 0 {
		return "?"
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "?"
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var bytes float64
	if err := conn.QueryRow(ctx, `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)`, b.lsn, a.lsn).Scan(&bytes); err != nil {
		return "?"
	}
	return fmt.Sprintf("%.0f B WAL, %.2f commits, %s", bytes/float64(n), float64(b.commits-a.commits)/float64(n), writesPerOrder(a, b, n))
}

// writesPerOrder is the transactions that wrote between two marks per
// order of n: for a drain with nothing else submitted, the worker's
// commits per order, whose floor is one (the result with the next
// order's claim).
func writesPerOrder(a, b walMark, n int) string {
	if !a.ok || !b.ok || n == 0 {
		return "? that wrote"
	}
	return fmt.Sprintf("%.2f that wrote", float64(b.nextXid-a.nextXid)/float64(n))
}
