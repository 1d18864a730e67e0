// Package migrations holds orderly's PostgreSQL schema as goose migrations,
// embedded in the binary so every command can apply them.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed *.sql
var files embed.FS

// Provider opens the database at dsn and returns a goose provider over the
// embedded migrations, holding goose's lock row (the goose_lock table) so
// that several processes starting at once migrate one at a time. Close it
// when done. Not goose's advisory lock: any role may take that one, and a
// session of the auditors' role (docs/sql.md) holding it stopped every
// upgrade's migrations; a row of goose_lock only orderly's own role writes.
//
// The lock is waited for (five minutes) only while another process holds
// it: a refusal of the server's (a role without rights to goose_lock, as
// the workers' and the auditors') fails at once.
func Provider(dsn string) (*goose.Provider, *sql.DB, error) {
	return ProviderWaiting(dsn, nil)
}

// ProviderWaiting is Provider whose runs tell waiting, when not nil, who
// holds the lock (a LockHeld) before they wait for it.
func ProviderWaiting(dsn string, waiting func(error)) (*goose.Provider, *sql.DB, error) {
	locker, err := newLocker(waiting)
	if err != nil {
		return nil, nil, err
	}
	return provider(dsn, goose.WithLocker(locker))
}

// newLocker is the goose_lock row's locker of Provider; waiting, when not
// nil, hears who holds the lock before each wait for it.
func newLocker(waiting func(error)) (lock.Locker, error) {
	locker, err := lock.NewPostgresTableLocker(lock.WithTableRetryPolicy(func(err error) bool {
		var pe *pgconn.PgError
		return !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "42") // 42: syntax error or access rule violation
	}))
	if err != nil || waiting == nil {
		return locker, err
	}
	return noticingLocker{Locker: locker, waiting: waiting}, nil
}

// LockHeld is what a migration's waiting hears when another process holds
// the lock as it goes to take it: another `orderly migrate` (or serve)
// running, or one killed while it ran (SIGKILL, a pod evicted), whose
// lease ends within 30 s. The wait was silent (hF15's rolling upgrade).
type LockHeld struct {
	By    string    // the holder, as goose names it: host name, process id, a random suffix
	Until time.Time // the end of its lease, renewed every few seconds while it runs
}

func (e *LockHeld) Error() string {
	return fmt.Sprintf("waiting for the migration lock (goose_lock), held by %s until %s: another orderly migrating this database, "+
		"or one killed while it did, whose lease then ends (waited for up to 5 minutes)", e.By, e.Until.UTC().Format(time.RFC3339))
}

// noticingLocker is goose's table locker that first tells waiting who
// holds the lock, if another process does.
type noticingLocker struct {
	lock.Locker
	waiting func(error)
}

func (l noticingLocker) Lock(ctx context.Context, db *sql.DB) error {
	var held LockHeld
	// No row (the lock free, or no table yet) or a failed read: goose's
	// Lock says what it finds.
	if db.QueryRowContext(ctx, `SELECT locked_by, lease_expires_at FROM goose_lock
		WHERE locked AND lease_expires_at > now()`).Scan(&held.By, &held.Until) == nil {
		l.waiting(&held)
	}
	return l.Locker.Lock(ctx, db)
}

// ReadProvider is Provider without the lock, for `orderly migrate
// status`: reading the applied versions needs no turn, and a role that
// may read them but not write goose_lock (the workers', docs/sql.md) can.
func ReadProvider(dsn string) (*goose.Provider, *sql.DB, error) {
	return provider(dsn)
}

func provider(dsn string, opts ...goose.ProviderOption) (*goose.Provider, *sql.DB, error) {
	// pgxpool's parser knows the pool_* settings a DSN may carry for the
	// service's pool; pgx alone would send them to the server as runtime
	// parameters, which it refuses.
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("parse database url: %w", err)
	}
	if _, set := pcfg.ConnConfig.RuntimeParams["lock_timeout"]; !set {
		pcfg.ConnConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(lockTimeout.Milliseconds(), 10)
	}
	db := stdlib.OpenDB(*pcfg.ConnConfig)
	p, err := goose.NewProvider(goose.DialectPostgres, db, files, opts...)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrations: %w", err)
	}
	return p, db, nil
}

// Up applies every pending migration to the database at dsn and returns
// the files it applied, in order, so that `serve` can say that an upgrade
// changed the schema. It refuses a database a newer orderly migrated
// (NotNewer). waiting, when not nil, hears of each wait for a table lock
// that gave up (Apply), and of a wait for the migration lock (LockHeld).
func Up(ctx context.Context, dsn string, waiting func(error)) (applied []string, err error) {
	p, db, err := ProviderWaiting(dsn, waiting)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	defer p.Close()
	have, err := p.GetDBVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the schema version: %w", err)
	}
	if err := NotNewer(have); err != nil {
		return nil, err
	}
	res, err := Apply(ctx, p, waiting)
	for _, r := range res {
		applied = append(applied, r.Source.Path)
	}
	if err != nil {
		return applied, fmt.Errorf("migrate up: %w", err)
	}
	if _, err := Rebuild(ctx, db, waiting); err != nil {
		return applied, fmt.Errorf("migrate up: %w", err)
	}
	return applied, nil
}

// concurrentIndexes are the indexes a migration builds CONCURRENTLY,
// outside a transaction, and its down drops so: a down that gives up
// for good (a pg_dump's transaction outlasting Rollback's tries) leaves
// the version where it was and the index invalid (the drop gave up after
// marking it so: never used, still updated by every write) or gone (the
// drop went through, a later step gave up). The next `migrate up` then
// had nothing to apply, or applied the later migrations only, and kept
// it so: 00027's policy on runbook_delegations looked through every
// order for each delegation a listed worker login read.
var concurrentIndexes = []struct{ name, create string }{
	{"orders_parent_run", `CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_parent_run ON orders (parent_run) WHERE parent_run IS NOT NULL`},
}

// Rebuild builds again, after a successful Apply, each of
// concurrentIndexes that is missing or invalid, as its migration does (an
// invalid one renamed, a lock on the index alone, and dropped
// CONCURRENTLY, so the traffic on its table is not queued behind the
// drop), under goose_lock's row as a migration is, trying again as Apply
// does when a lock wait gives up. It returns the indexes it built. With
// every index valid it costs one catalog read.
func Rebuild(ctx context.Context, db *sql.DB, waiting func(error)) (rebuilt []string, err error) {
	broken, err := brokenIndexes(ctx, db)
	if err != nil || len(broken) == 0 {
		return nil, err
	}
	locker, err := newLocker(waiting)
	if err != nil {
		return nil, err
	}
	if err := locker.Lock(ctx, db); err != nil {
		return nil, fmt.Errorf("rebuild indexes: %w", err)
	}
	defer func() {
		if uerr := locker.Unlock(context.WithoutCancel(ctx), db); uerr != nil && err == nil {
			err = fmt.Errorf("rebuild indexes: %w", uerr)
		}
	}()
	// Read again under the lock: another process's up may have rebuilt
	// them meanwhile, and one of its builds in progress is invalid too.
	if broken, err = brokenIndexes(ctx, db); err != nil {
		return nil, err
	}
	for _, ix := range broken {
		old := ix.name + "_invalid"
		err := retryLocks(ctx, waiting, func() error {
			for _, q := range []string{
				`DROP INDEX CONCURRENTLY IF EXISTS ` + old,
				`DO $$ BEGIN IF EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass('` + ix.name + `') AND NOT indisvalid) THEN
					ALTER INDEX ` + ix.name + ` RENAME TO ` + old + `; END IF; END $$`,
				`DROP INDEX CONCURRENTLY IF EXISTS ` + old,
				ix.create,
			} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return rebuilt, fmt.Errorf("rebuild index %s: %w", ix.name, err)
		}
		rebuilt = append(rebuilt, ix.name)
	}
	return rebuilt, nil
}

// brokenIndexes lists the concurrentIndexes that are not there and valid,
// or whose renamed invalid copy an earlier rebuild could not drop.
func brokenIndexes(ctx context.Context, db *sql.DB) (broken []struct{ name, create string }, err error) {
	for _, ix := range concurrentIndexes {
		var bad bool
		if err := db.QueryRowContext(ctx, `SELECT NOT EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass($1) AND indisvalid)
			OR to_regclass($2) IS NOT NULL`, ix.name, ix.name+"_invalid").Scan(&bad); err != nil {
			return nil, fmt.Errorf("read the state of index %s: %w", ix.name, err)
		}
		if bad {
			broken = append(broken, ix)
		}
	}
	return broken, nil
}

// A migration's statement waits at most lockTimeout for a table lock (the
// sessions' lock_timeout, unless the database URL sets one), and Apply
// tries a migration that gave up lockTries times. A statement waiting for
// a lock makes every later one on that table wait behind it: an ALTER
// TABLE or CREATE INDEX waiting for a worker's or an auditor's open
// transaction would stop all orders until that transaction ended. Giving
// up and trying again a second later lets the traffic through in between.
var (
	lockTimeout = 5 * time.Second
	lockTries   = 60
	lockPause   = time.Second
)

// Apply applies p's pending migrations and returns those it applied, in
// order. A migration that gave up waiting for a table lock (SQLSTATE
// 55P03) is tried again, up to lockTries times, after telling waiting
// (when not nil) about it.
func Apply(ctx context.Context, p *goose.Provider, waiting func(error)) ([]*goose.MigrationResult, error) {
	var applied []*goose.MigrationResult
	err := retryLocks(ctx, waiting, func() error {
		res, err := p.Up(ctx)
		applied = append(applied, res...)
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			applied = append(applied, partial.Applied...)
		}
		return err
	})
	return applied, err
}

// Rollback rolls back p's newest applied migration, as `orderly migrate
// down` does, and tries it again as Apply does when it gave up waiting for
// a table lock: 00027's down gave up at once beside a pg_dump (its ALTER
// TABLE waited for the dump's lock on runbook_delegations) and failed the
// command, where up waited. Each try runs the whole migration's down
// again: every down is one transaction, or (00027's, outside one) made of
// steps each of which may run again.
func Rollback(ctx context.Context, p *goose.Provider, waiting func(error)) (*goose.MigrationResult, error) {
	var res *goose.MigrationResult
	err := retryLocks(ctx, waiting, func() (err error) {
		res, err = p.Down(ctx)
		return err
	})
	return res, err
}

// retryLocks runs try until it returns anything but a lock wait that gave
// up (SQLSTATE 55P03), lockTries times at most, lockPause apart, telling
// waiting (when not nil) of each wait but the last.
func retryLocks(ctx context.Context, waiting func(error), try func() error) error {
	for n := 1; ; n++ {
		err := try()
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "55P03" {
			return err
		}
		if n == lockTries {
			return fmt.Errorf("gave up after %d tries of %s each to take a table lock that another session holds "+
				"(an open transaction: see pg_stat_activity, state 'idle in transaction'): %w", n, lockTimeout, err)
		}
		if waiting != nil {
			waiting(err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(lockPause):
		}
	}
}

// Latest is the version of the newest embedded migration: a database below
// it has pending migrations, and the services refuse to start on it.
func Latest() (int64, error) {
	names, err := fs.Glob(files, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, n := range names {
		digits := n[:strings.IndexFunc(n, func(r rune) bool { return r < '0' || r > '9' })]
		v, err := strconv.ParseInt(digits, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("migration %s has no version number", n)
		}
		latest = max(latest, v)
	}
	return latest, nil
}

// NotNewer refuses a database whose schema version, have, is above the
// newest migration this binary embeds: a newer orderly migrated it. Such a
// schema may hold what this binary would neither fill in nor check, and
// this binary lacks the migrations to roll it back (goose would find
// nothing to apply and call it up to date). Every server command and
// `orderly migrate` refuse it, naming both versions.
func NotNewer(have int64) error {
	want, err := Latest()
	if err != nil {
		return err
	}
	if have <= want {
		return nil
	}
	return fmt.Errorf("the database's orderly schema is version %d, newer than this binary's %d: a newer orderly migrated it; "+
		"run that orderly (or a later one), or roll the schema back to %d with that orderly's `orderly migrate down` (one version per run) first",
		have, want, want)
}

// RolledBack refuses a schema version, have, that a running server command
// reads below the newest migration its binary embeds: the schema was
// rolled back under it (`orderly migrate down`, or a restore of an older
// backup). The process's statements count on what the rollback removed
// (without 00011's trigger, a finished order keeps its env values), so it
// stops, as it would refuse the schema at start. A newer schema is no
// reason to stop: a rolling upgrade migrates before it replaces the
// processes (docs/deploy.md, "Upgrading").
func RolledBack(have int64) error {
	want, err := Latest()
	if err != nil {
		return err
	}
	if have >= want {
		return nil
	}
	return fmt.Errorf("the database's orderly schema is version %d, older than this binary's %d: it was rolled back under this running process "+
		"(`orderly migrate down`, or a restore of an older backup); stopping. Run `orderly migrate up` with this binary, or the orderly whose schema is version %d",
		have, want, have)
}
