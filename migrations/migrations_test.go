package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestUpReportsWhatItApplied: Up names the migrations it applied, which
// serve logs when an upgrade changed the schema, and nothing when the
// schema was up to date.
func TestUpReportsWhatItApplied(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	p, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for range 2 {
		if _, err := p.Down(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	applied, err := migrations.Up(t.Context(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, src := range p.ListSources()[len(p.ListSources())-2:] {
		want = append(want, src.Path)
	}
	if !slices.Equal(applied, want) {
		t.Fatalf("applied %q, want %q", applied, want)
	}
	if applied, err := migrations.Up(t.Context(), dsn, nil); err != nil || len(applied) != 0 {
		t.Fatalf("second up applied %q, %v; want nothing", applied, err)
	}
}

// TestUpIsNotHeldUpByAnAdvisoryLock: goose's advisory lock, which any
// role may take (an auditor's session, docs/sql.md), held while an
// upgrade has migrations to apply, does not stop them; two processes
// migrating at once still apply each migration once.
func TestUpIsNotHeldUpByAnAdvisoryLock(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	p, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for range 2 {
		if _, err := p.Down(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	holder, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(t.Context(), `SELECT pg_advisory_lock($1)`, lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	results := make(chan []string, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			applied, err := migrations.Up(ctx, dsn, nil)
			results <- applied
			errs <- err
		}()
	}
	var n int
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("migrate up while another session holds goose's advisory lock: %v", err)
		}
		n += len(<-results)
	}
	if n != 2 {
		t.Errorf("the two processes applied %d migrations, want the 2 pending", n)
	}
}

// TestUpSaysWhoHoldsTheMigrationLock: a migrate killed while it held
// goose_lock's row (SIGKILL, a pod evicted) leaves it taken until its
// lease ends, 30 s, and a second migrate waits for another's whole run:
// the next `migrate up` waited without a word. It tells waiting who
// holds the lock, and then applies what is pending.
func TestUpSaysWhoHoldsTheMigrationLock(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	p, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := p.Down(t.Context()); err != nil {
		t.Fatal(err)
	}
	// As a killed migrate leaves it, its lease ending shortly.
	res, err := db.ExecContext(t.Context(), `UPDATE goose_lock SET locked = true, locked_at = now(),
		locked_by = 'web-9-killed', lease_expires_at = now() + interval '2 seconds'`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("goose_lock: %d rows, want 1", n)
	}
	var heard []error
	applied, err := migrations.Up(t.Context(), dsn, func(err error) { heard = append(heard, err) })
	if err != nil || len(applied) != 1 {
		t.Fatalf("migrate up after the lock's lease ended: applied %q, %v; want the 1 pending", applied, err)
	}
	var held *migrations.LockHeld
	if len(heard) != 1 || !errors.As(heard[0], &held) || held.By != "web-9-killed" {
		t.Fatalf("waiting heard %v, want once who holds the migration lock (web-9-killed)", heard)
	}
	if !strings.Contains(held.Error(), "web-9-killed") || !strings.Contains(held.Error(), "goose_lock") {
		t.Errorf("the notice %q names neither the holder nor the table", held.Error())
	}
}

// TestMigrateAsAReader: a role that may read goose_db_version but not
// write goose_lock (the workers' role of docs/sql.md grants just that)
// reads the status (`orderly migrate status`), which takes no turn, and
// is refused at once when it tries to migrate: goose's table locker
// retried the refusal of its lock row for five minutes.
func TestMigrateAsAReader(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	reader := testenv.VersionReader(t, dsn, "orderly_reader")

	p, db, err := migrations.ReadProvider(reader)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := p.Status(ctx)
	if err != nil || len(st) == 0 || st[len(st)-1].AppliedAt.IsZero() {
		t.Fatalf("status as a reader: %d migrations, %v; want every one applied", len(st), err)
	}
	start := time.Now()
	if _, err := migrations.Up(ctx, reader, nil); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("up as a reader: %v, want refused for its rights", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("up as a reader was refused after %s, want at once", d)
	}
}

// TestMigrationDoesNotStopTheTraffic: a migration that waits for a table
// lock an open transaction holds (a worker's, an auditor's) gives up
// after lock_timeout and tries again, so the statements queued behind its
// lock request get through in between; it applies once the transaction
// ends. Without the timeout, the CREATE INDEX of 00016 waiting for the
// transaction's lock on order_events held every insert of an event (every
// order's progress) until the transaction ended.
func TestMigrationDoesNotStopTheTraffic(t *testing.T) {
	defer migrations.ShortLockWaits(200*time.Millisecond, 50*time.Millisecond, 1000)()
	dsn := testenv.Postgres(t) // migrated
	// 00016 creates an index on order_events; an insert's lock, held open.
	p, _, tx := downHoldingAWriter(t, dsn, 15, "order_events")
	var waits atomic.Int32
	done := make(chan error, 1)
	go func() {
		_, err := migrations.Up(t.Context(), dsn, func(error) { waits.Add(1) })
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); waits.Load() == 0; {
		select {
		case err := <-done:
			t.Fatalf("migrate up ended while the lock was held: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("migrate up did not give up waiting for the lock within 10 s")
		}
	}

	// Another writer of order_events, as an order's progress is, while
	// the migration keeps trying.
	writerGetsThrough(t, dsn, "order_events", "3s", 5, "the migration")
	endAndWantLatest(t, p, tx, done, 30*time.Second)
}

// providerDownTo is a migrations provider for dsn, its schema rolled
// back to version to.
func providerDownTo(t *testing.T, dsn string, to int64) *goose.Provider {
	t.Helper()
	p, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := p.DownTo(t.Context(), to); err != nil {
		t.Fatal(err)
	}
	return p
}

// downHoldingAWriter rolls dsn's schema back to version to and holds a
// writer's lock on table (ROW EXCLUSIVE, as an insert or an update
// takes) in a transaction left open: the migration that follows waits
// for it. It returns the provider, the holding connection and its
// transaction.
func downHoldingAWriter(t *testing.T, dsn string, to int64, table string) (*goose.Provider, *pgx.Conn, pgx.Tx) {
	t.Helper()
	p := providerDownTo(t, dsn, to)
	holder, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(context.Background()) })
	tx, err := holder.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `LOCK TABLE `+table+` IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	return p, holder, tx
}

// writerGetsThrough takes a writer's lock on table times over from a
// connection of its own, each giving up after timeout: it fails the test
// when one waited behind what is named.
func writerGetsThrough(t *testing.T, dsn, table, timeout string, times int, behind string) {
	t.Helper()
	other, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	for range times {
		otx, err := other.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := otx.Exec(t.Context(), `SET LOCAL lock_timeout = '`+timeout+`'`); err != nil {
			t.Fatal(err)
		}
		if _, err := otx.Exec(t.Context(), `LOCK TABLE `+table+` IN ROW EXCLUSIVE MODE`); err != nil {
			t.Fatalf("a writer of %s waited behind %s: %v", table, behind, err)
		}
		if err := otx.Rollback(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// endAndWantLatest ends the held transaction tx and wants the migration
// reporting on done to finish within, at the latest version.
func endAndWantLatest(t *testing.T, p *goose.Provider, tx pgx.Tx, done <-chan error, within time.Duration) {
	t.Helper()
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("migrate up after the transaction ended: %v", err)
		}
	case <-time.After(within):
		t.Fatal("migrate up did not finish after the transaction ended")
	}
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := p.GetDBVersion(t.Context()); err != nil || v != latest {
		t.Fatalf("schema version %d, %v; want %d", v, err, latest)
	}
}

// TestIndexOnOrdersLetsWritersThrough: 00027 builds orders_parent_run
// with CREATE INDEX CONCURRENTLY, which takes a lock that writers of
// orders do not wait for. A plain CREATE INDEX held a SHARE lock on orders
// for its whole build (8.5 s on a million orders in a rolling upgrade's
// probe), and every submission, claim and result waited for it. The
// writer here would wait for the index's lock as long as the migration
// waits for the open transaction below (a minute): it gives up after 2 s.
func TestIndexOnOrdersLetsWritersThrough(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	// A writer's lock, held open: the build waits for it.
	p, holder, tx := downHoldingAWriter(t, dsn, 26, "orders") // 00027 builds the index
	// pg_stat_activity is read outside holder's transaction, which would
	// see the snapshot it took first.
	watch, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	done := upWaitingOnLock(t, watch, dsn, "%INDEX%orders_parent_run%")

	writerGetsThrough(t, dsn, "orders", "2s", 1, "the migration's index")
	endAndWantLatest(t, p, tx, done, 60*time.Second)
	var valid bool
	if err := holder.QueryRow(t.Context(), `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname = 'orders_parent_run'`).Scan(&valid); err != nil || !valid {
		t.Fatalf("orders_parent_run valid %v, %v", valid, err)
	}
}

// invalidIndexLeft leaves orders_parent_run as a build that gave up
// leaves it, invalid (the test's login is a superuser), and returns the
// connection that made it.
func invalidIndexLeft(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), `CREATE INDEX orders_parent_run ON orders (parent_run) WHERE parent_run IS NOT NULL;
		UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'orders_parent_run'::regclass`); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestIndexLeftInvalidIsBuiltAgain: a CREATE INDEX CONCURRENTLY that gave
// up (its lock_timeout, while an older transaction stayed open) leaves
// the index invalid, and IF NOT EXISTS would keep it so: never used,
// yet updated by every insert. 00027 drops such an index before it
// builds it, so the try Apply makes again ends with a valid one.
func TestIndexLeftInvalidIsBuiltAgain(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	providerDownTo(t, dsn, 26)
	conn := invalidIndexLeft(t, dsn)
	if _, err := migrations.Up(t.Context(), dsn, nil); err != nil {
		t.Fatal(err)
	}
	var valid bool
	if err := conn.QueryRow(t.Context(), `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname = 'orders_parent_run'`).Scan(&valid); err != nil || !valid {
		t.Fatalf("orders_parent_run valid %v, %v; want a valid index", valid, err)
	}
}

// TestIndexLeftInvalidIsDroppedBesideTheTraffic: the build of
// orders_parent_run gives up (lock_timeout) while a transaction older than
// it stays open, a pg_dump's, which holds a snapshot and a reader's lock
// on orders, and leaves the index invalid. Apply's next try dropped it
// with a plain DROP INDEX, whose ACCESS EXCLUSIVE lock waited for that
// reader, and every statement on orders, readers included, waited behind
// it: each try stopped the submissions, claims and results for its whole
// lock_timeout (5 s of every 6 on a scratch database with a pg_dump-like
// transaction open, while the plain CREATE INDEX 00027 had before would
// not have waited for a reader at all). The invalid index is renamed (a
// lock on the index alone) and dropped CONCURRENTLY, which waits for the
// reader without a lock the traffic queues behind.
func TestIndexLeftInvalidIsDroppedBesideTheTraffic(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	p := providerDownTo(t, dsn, 26)
	conn := invalidIndexLeft(t, dsn)
	// A pg_dump's transaction: a snapshot, and a reader's lock on orders.
	tx := dumpLike(t, dsn, "orders")
	// The migration waits for the open transaction, on the invalid index.
	done := upWaitingOnLock(t, conn, dsn, "%orders_parent_run%")
	writerGetsThrough(t, dsn, "orders", "2s", 1, "the drop of the invalid index")
	endAndWantLatest(t, p, tx, done, 60*time.Second)
	var names []string
	rows, err := conn.Query(t.Context(), `SELECT c.relname || ' ' || i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname LIKE 'orders_parent_run%' ORDER BY 1`)
	if err == nil {
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || !slices.Equal(names, []string{"orders_parent_run true"}) {
		t.Fatalf("indexes on orders.parent_run: %q, %v; want orders_parent_run, valid, alone", names, err)
	}
}

// upWaitingOnLock starts `migrate up` (with a minute's lock_timeout) and
// returns once watch, a connection outside the transaction under test,
// sees a statement whose text is like the pattern waiting on a lock;
// the channel gets up's end.
func upWaitingOnLock(t *testing.T, watch *pgx.Conn, dsn, like string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := migrations.Up(t.Context(), dsn+"&lock_timeout=60000", nil)
		done <- err
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		if err := watch.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE query LIKE $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`, like).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("migrate up ended while the other transaction was open: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			rows, _ := watch.Query(t.Context(), `SELECT coalesce(wait_event_type,'') || ' ' || coalesce(wait_event,'') || ' ' || coalesce(state,'') || ' ' || coalesce(left(query, 100),'') FROM pg_stat_activity WHERE pid <> pg_backend_pid()`)
			a, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			t.Fatalf("migrate up did not wait on a lock for a statement like %q within 30 s: %q", like, a)
		}
	}
}

// dumpLike opens a transaction as a pg_dump's: REPEATABLE READ, having
// read each of tables (a snapshot, and a reader's lock on each).
func dumpLike(t *testing.T, dsn string, tables ...string) pgx.Tx {
	t.Helper()
	holder, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close(context.Background()) })
	tx, err := holder.BeginTx(t.Context(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if _, err := tx.Exec(t.Context(), `SELECT count(*) FROM `+table); err != nil {
			t.Fatal(err)
		}
	}
	return tx
}

// TestDownWaitsForALockAsUpDoes: `orderly migrate down` beside a
// pg_dump's transaction failed at its first lock wait (00027's down:
// ALTER TABLE runbook_delegations waits for the dump's reader's lock;
// `orderly stopped … 55P03`), where up gives up, lets the traffic through
// and tries again. Rollback tries again as Apply does.
func TestDownWaitsForALockAsUpDoes(t *testing.T) {
	defer migrations.ShortLockWaits(200*time.Millisecond, 50*time.Millisecond, 1000)()
	dsn := testenv.Postgres(t) // migrated
	p := providerDownTo(t, dsn, 27)
	tx := dumpLike(t, dsn, "runbook_delegations")
	var waits atomic.Int32
	done := make(chan error, 1)
	go func() {
		_, err := migrations.Rollback(t.Context(), p, func(error) { waits.Add(1) })
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); waits.Load() < 2; {
		select {
		case err := <-done:
			t.Fatalf("migrate down ended while the dump's transaction was open: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("migrate down did not give up waiting for the lock twice within 10 s")
		}
	}
	writerGetsThrough(t, dsn, "runbook_delegations", "3s", 5, "the migration")
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("migrate down after the transaction ended: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("migrate down did not finish after the transaction ended")
	}
	if v, err := p.GetDBVersion(t.Context()); err != nil || v != 26 {
		t.Fatalf("schema version %d, %v; want 26", v, err)
	}
}

// TestDownThatGaveUpLeavesThePoliciesOn: a down of 00027 that gives up
// for good (a pg_dump longer than the tries) leaves the version at 27, so
// `migrate up` has nothing to apply. It dropped the policies on
// runbook_delegations (and gave the workers api_presence back) before
// the index, whose drop then gave up: row security off under version 27,
// kept so by up. The index goes first now; a down run again finishes,
// and up after it builds everything again.
func TestDownThatGaveUpLeavesThePoliciesOn(t *testing.T) {
	defer migrations.ShortLockWaits(200*time.Millisecond, 50*time.Millisecond, 2)()
	dsn := testenv.Postgres(t) // migrated
	p := providerDownTo(t, dsn, 27)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	state := func() string {
		t.Helper()
		var rls bool
		var policies int
		var index string
		if err := conn.QueryRow(t.Context(), `SELECT relrowsecurity,
			(SELECT count(*) FROM pg_policies WHERE tablename = 'runbook_delegations'),
			coalesce((SELECT 'index ' || CASE WHEN indisvalid THEN 'valid' ELSE 'invalid' END FROM pg_index WHERE indexrelid = to_regclass('orders_parent_run')), 'no index')
			FROM pg_class WHERE oid = 'runbook_delegations'::regclass`).Scan(&rls, &policies, &index); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("row security %v, %d policies, %s", rls, policies, index)
	}
	tx := dumpLike(t, dsn, "orders") // the index's drop waits for it, not the policies
	if _, err := migrations.Rollback(t.Context(), p, nil); err == nil || !strings.Contains(err.Error(), "gave up after 2 tries") {
		t.Fatalf("migrate down beside the dump: %v; want it to give up", err)
	}
	v, err := p.GetDBVersion(t.Context())
	if err != nil || v != 27 {
		t.Fatalf("schema version %d, %v after the down gave up; want 27", v, err)
	}
	if got := state(); !strings.HasPrefix(got, "row security true, 2 policies, ") {
		t.Fatalf("after a down of 00027 that gave up: %s; want 00027's row security and policies in force", got)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Rollback(t.Context(), p, nil); err != nil {
		t.Fatalf("migrate down again: %v", err)
	}
	if got := state(); got != "row security false, 0 policies, no index" {
		t.Fatalf("after migrate down again: %s", got)
	}
	if _, err := migrations.Up(t.Context(), dsn, nil); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != "row security true, 2 policies, index valid" {
		t.Fatalf("after migrate up: %s", got)
	}
}

// TestUpAfterADownThatGaveUpRebuildsTheIndex: a down of 00027 that gives
// up for good at its index's drop (a pg_dump's transaction outlasting the
// tries) leaves the version at 27 and orders_parent_run invalid: never
// used by 00027's policy, still updated by every write. `migrate up`
// then applied the later migrations and kept it so (docs/deploy.md said
// to run down again). Up builds it again now; and so when the drop went
// through and the down gave up after it, leaving no index.
func TestUpAfterADownThatGaveUpRebuildsTheIndex(t *testing.T) {
	defer migrations.ShortLockWaits(200*time.Millisecond, 50*time.Millisecond, 2)()
	dsn := testenv.Postgres(t) // migrated
	p := providerDownTo(t, dsn, 27)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	index := func() string {
		t.Helper()
		var names []string
		rows, err := conn.Query(t.Context(), `SELECT c.relname || CASE WHEN i.indisvalid THEN ' valid' ELSE ' invalid' END
			FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'orders_parent_run%' ORDER BY 1`)
		if err == nil {
			names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(names, ", ")
	}
	tx := dumpLike(t, dsn, "orders")
	if _, err := migrations.Rollback(t.Context(), p, nil); err == nil || !strings.Contains(err.Error(), "gave up after 2 tries") {
		t.Fatalf("migrate down beside the dump: %v; want it to give up", err)
	}
	if got := index(); got != "orders_parent_run invalid" {
		t.Fatalf("after a down of 00027 that gave up: %q; want the index left invalid", got)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(t.Context(), dsn, nil); err != nil {
		t.Fatal(err)
	}
	if got := index(); got != "orders_parent_run valid" {
		t.Fatalf("after migrate up: %q; want orders_parent_run valid, alone", got)
	}

	// The drop went through; what came after it gave up.
	providerDownTo(t, dsn, 27)
	if _, err := conn.Exec(t.Context(), `DROP INDEX orders_parent_run`); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Up(t.Context(), dsn, nil); err != nil {
		t.Fatal(err)
	}
	if got := index(); got != "orders_parent_run valid" {
		t.Fatalf("after migrate up on a version 27 without the index: %q; want orders_parent_run valid", got)
	}
	// Up to date and whole: nothing to rebuild.
	_, db, err := migrations.Provider(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if rebuilt, err := migrations.Rebuild(t.Context(), db, nil); err != nil || len(rebuilt) != 0 {
		t.Fatalf("a rebuild of a whole schema rebuilt %q, %v; want nothing", rebuilt, err)
	}
}
