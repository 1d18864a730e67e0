// Package postgres is orderly's system of record on pgxpool. It holds every
// SQL statement of the orders tables and translates pgx errors into the
// domain's errors.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/migrations"
)

// Store is the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	inserts insertGroup // InsertOrder's group commit
}

// Open connects a pool to dsn and checks that the server answers.
func Open(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	return open(ctx, dsn, nil)
}

// OpenAs is Open with the pool's connections named application in
// PostgreSQL (application_name: pg_stat_activity and the server's log
// show it), unless dsn or PGAPPNAME names them already. A fleet is one
// pool per worker process: when max_connections runs out, or a restart
// has every pool connect again at once, that name is how the operator
// tells which processes hold the connections. A name dsn sets in its
// options (options=-c application_name=…) counts too: PostgreSQL applies
// the startup packet's parameters after its options, so the process's
// name would have replaced the operator's.
func OpenAs(ctx context.Context, dsn, application string) (*pgxpool.Pool, error) {
	return open(ctx, dsn, func(c *pgxpool.Config) {
		params := c.ConnConfig.RuntimeParams
		if _, named := params["application_name"]; !named && application != "" && !optionsName(params["options"]) {
			params["application_name"] = application
		}
	})
}

// optionsName says whether a connection's options (the command-line
// switches PostgreSQL reads from the startup packet) set
// application_name: "-c name=value", "-cname=value" or "--name=value",
// the name in any case and with - for _, as the server reads them.
func optionsName(options string) bool {
	fields := strings.Fields(options)
	for i, f := range fields {
		switch {
		case f == "-c" && i+1 < len(fields):
			f = fields[i+1]
		case strings.HasPrefix(f, "--"):
			f = f[2:]
		case strings.HasPrefix(f, "-c"):
			f = f[2:]
		default:
			continue
		}
		name, _, _ := strings.Cut(f, "=")
		if strings.ReplaceAll(strings.ToLower(name), "-", "_") == "application_name" {
			return true
		}
	}
	return false
}

// open is Open; tweak, when not nil, may change the pool's configuration
// (the tests observe the plans of the store's statements through it).
func open(ctx context.Context, dsn string, tweak func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(dsn)
	if err != nil {
		return nil, err
	}
	if tweak != nil {
		tweak(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	if pool, err = describeBehindPooler(ctx, pool, cfg, dsn); err != nil {
		if pool != nil {
			pool.Close()
		}
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	return pool, nil
}

// poolConfig is the configuration of a pool of connections to dsn.
func poolConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, RedactParseError(fmt.Errorf("parse database url: %w", err))
	}
	if err := execModeKept(cfg.ConnConfig.DefaultQueryExecMode); err != nil {
		return nil, err
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		scanTimesInUTC(c)
		if err := encodeUUIDs(ctx, c); err != nil {
			return err
		}
		keepScanPlans(c)
		return nil
	}
	cfg.BeforeClose = dropScanPlans
	cfg.ConnConfig.Tracer = backendTracer{}
	rereadPassfile(cfg, dsn)
	if err := deadLinkDialer(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// execModeKept refuses the default_query_exec_mode values the store's
// statements cannot run in: exec and simple_protocol send a parameter
// with the type its Go value suggests, not the one PostgreSQL describes,
// and the store passes its JSON (a policy, a result's detail) as bytes,
// which they send as bytea: "invalid input syntax for type json". The
// API then failed every order's insert, and a worker claimed an order,
// ran it and could not store its result. pgx's own documentation
// suggests exec behind PgBouncer. Said at the start instead, with what
// works behind a pooler (describe_exec, which also works, pgx advises
// against there).
func execModeKept(m pgx.QueryExecMode) error {
	var name string // as database_url spells it (m.String() says "simple protocol")
	switch m {
	case pgx.QueryExecModeExec:
		name = "exec"
	case pgx.QueryExecModeSimpleProtocol:
		name = "simple_protocol"
	default:
		return nil
	}
	return fmt.Errorf("parse database url: default_query_exec_mode=%s is not supported: orderly's statements need the parameter "+
		"types PostgreSQL describes; remove the setting (orderly sends its statements unnamed, cache_describe, behind a "+
		"connection pooler) or name cache_describe", name)
}

// New returns a Store over pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Ping reports whether PostgreSQL answers; /readyz uses it.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return translate("ping postgresql", err)
	}
	return nil
}

// translate turns a pgx error into a domain error, keeping the cause.
// Anything that says the database or the connection to it is gone is
// CodeUnavailable (503): a client may retry, and it is never a 500.
func translate(doing string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return order.ErrNotFound
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", doing, err)
	}
	// A connection that never came up, whatever the server said while
	// refusing it (a full disk fails its start with XX000 "could not
	// write init file"; a database closed to connections is 55000), or
	// past connect_timeout (a server that accepts and answers nothing):
	// the statement was never sent, and nothing of the request is at
	// fault.
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return unavailable(doing, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", doing, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return &order.Error{Code: order.CodeConflict, Message: "already exists", Err: fmt.Errorf("%s: %w", doing, err)}
		case pgErr.Code == diskFullState:
			noteDiskFull()
			return &order.Error{Code: order.CodeUnavailable, Message: "database unavailable: PostgreSQL is out of disk space",
				Err: fmt.Errorf("%s: %w", doing, err)}
		case unavailableState(pgErr.Code):
			return unavailable(doing, err)
		case waitedTooLongState(pgErr.Code):
			return &order.Error{Code: order.CodeUnavailable,
				Message: "database unavailable: a statement waited too long, for a lock another session holds or past statement_timeout",
				Err:     fmt.Errorf("%s: %w", doing, err)}
		case preparedStatementLost(pgErr):
			return fmt.Errorf("%s: %w: %s", doing, err, pooledStatementsHint)
		case schemaGoneState(pgErr.Code):
			suspectSchema()
			return &order.Error{Code: order.CodeUnavailable, Message: "database schema changed under this process",
				Err: fmt.Errorf("%s: %w", doing, err)}
		}
		return fmt.Errorf("%s: %w", doing, err)
	}
	if connectionLost(err) {
		return unavailable(doing, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

func unavailable(doing string, err error) error {
	return &order.Error{Code: order.CodeUnavailable, Message: "database unavailable", Err: fmt.Errorf("%s: %w", doing, err)}
}

// unavailableState reports SQLSTATEs that mean the server cannot serve us
// now, not that the statement is wrong: connection exceptions (class 08),
// shutdown and admin termination (57P), insufficient resources (53),
// system errors (58), and a read-only server (25006, a replica after a
// failover).
func unavailableState(code string) bool {
	return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "57P") || strings.HasPrefix(code, "53") ||
		strings.HasPrefix(code, "58") || code == "25006"
}

// waitedTooLongState reports the SQLSTATEs of a statement the server
// gave up on for waiting: 55P03, a lock not granted within lock_timeout
// (another session's open transaction holds it: an operator's LOCK
// TABLE, a VACUUM FULL, a migration's ALTER TABLE, or a SELECT … FOR
// UPDATE of an order), and 57014, a statement canceled by
// statement_timeout or by an operator's pg_cancel_backend (a cancel of
// orderly's own, its context ending, comes back from pgx as the
// context's error, checked: told apart above). orderly sets neither
// timeout but an operator may, in
// database_url (?lock_timeout=…, as deploy.md suggests for migrations) or
// on its role, and each was a 500 "internal error" to the client. The
// statement was refused with an ERROR: nothing it did was kept, and the
// same request may succeed once the lock is released.
func waitedTooLongState(code string) bool {
	return code == "55P03" || code == "57014"
}

// schemaGoneState reports the SQLSTATEs of a statement that names what
// the database no longer has: a column (42703), a table (42P01), a
// function (42883) or a type or other object (42704). orderly's own
// statements meet them only when the schema was rolled back under the
// running process (`orderly migrate down`, a restore of an older backup):
// 00025's down drops orders.parent_run, which every insert and claim of a
// newer process names. Not the client's fault, so 503, and the process
// checks its schema at once (SchemaSuspect) instead of at its next
// minute's check, failing every submission and claim until then.
func schemaGoneState(code string) bool {
	return code == "42703" || code == "42P01" || code == "42883" || code == "42704"
}

// schemaGone reports whether err is a statement's failure on what the
// database no longer has (schemaGoneState): the server answered, nothing
// was written, and nothing is to be found out about it.
func schemaGone(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && schemaGoneState(pgErr.Code)
}

var (
	schemaMu      sync.Mutex
	schemaSuspect = make(chan struct{})
)

// SchemaSuspect returns a channel closed once a statement of any store in
// this process failed on a column, table or function that is gone
// (schemaGoneState). The server commands' schema watch
// (cmd/orderly, waitForSignals) waits on it beside its ticker, calls
// RearmSchemaSuspect and reads the version at once: a rollback under them
// stops them at their first failed statement, not up to a minute later.
func SchemaSuspect() <-chan struct{} {
	schemaMu.Lock()
	defer schemaMu.Unlock()
	return schemaSuspect
}

// RearmSchemaSuspect replaces the closed channel seen, when it is still
// the current one, and returns the current one: a suspicion raised while
// the caller checks closes the new channel, and is not lost.
func RearmSchemaSuspect(seen <-chan struct{}) <-chan struct{} {
	schemaMu.Lock()
	defer schemaMu.Unlock()
	if seen == schemaSuspect {
		select {
		case <-schemaSuspect:
			schemaSuspect = make(chan struct{})
		default:
		}
	}
	return schemaSuspect
}

func suspectSchema() {
	schemaMu.Lock()
	defer schemaMu.Unlock()
	select {
	case <-schemaSuspect:
	default:
		close(schemaSuspect)
	}
}

// connectionLost reports errors of a connection that broke or never came
// up: the server closed it mid-statement (unexpected EOF when a backend is
// terminated or restarted), the socket failed, or pgx had already closed it.
func connectionLost(err error) bool {
	var netErr net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &netErr) || errors.As(err, &ce) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// CheckSchema reports a clear error when the database lacks orderly's
// tables, so `orderly api` or `worker` against an unmigrated database says
// what to do instead of failing on its first query, and when a newer
// orderly migrated it (migrations.NotNewer).
func (s *Store) CheckSchema(ctx context.Context) error {
	want, err := migrations.Latest()
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	// Two statements: PostgreSQL resolves the table of a subquery when it
	// plans it, so one CASE over to_regclass still fails with 42P01 on a
	// database that was never migrated.
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists); err != nil {
		return translate("check schema", err)
	}
	var have int64
	if exists {
		if have, err = s.SchemaVersion(ctx); err != nil {
			return err
		}
	}
	if err := migrations.NotNewer(have); err != nil {
		return err
	}
	if have < want {
		return fmt.Errorf("the database has no (or an old) orderly schema (version %d, this binary needs %d): run `orderly migrate up --database-url …` first", have, want)
	}
	return nil
}

// SchemaVersion is the newest migration goose recorded as applied: what
// CheckSchema judges at start, and what a running server command reads
// again to notice a schema rolled back under it (cmd/orderly).
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	var have int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version`).Scan(&have); err != nil {
		return 0, translate("read the schema version", err)
	}
	return have, nil
}
