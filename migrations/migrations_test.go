package migrations_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	applied, err := migrations.Up(t.Context(), dsn)
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
	if applied, err := migrations.Up(t.Context(), dsn); err != nil || len(applied) != 0 {
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
			applied, err := migrations.Up(ctx, dsn)
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

// TestMigrateAsAReader: a role that may read goose_db_version but not
// write goose_lock (the workers' role of docs/sql.md grants just that)
// reads the status (`orderly migrate status`), which takes no turn, and
// is refused at once when it tries to migrate: goose's table locker
// retried the refusal of its lock row for five minutes.
func TestMigrateAsAReader(t *testing.T) {
	dsn := testenv.Postgres(t) // migrated
	admin, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("orderly_reader_t%d", time.Now().UnixNano())
	for _, q := range []string{"CREATE ROLE " + name + " LOGIN", "GRANT USAGE ON SCHEMA public TO " + name,
		"GRANT SELECT ON goose_db_version TO " + name} {
		if _, err := admin.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{"DROP OWNED BY " + name, "DROP ROLE " + name} {
			if _, err := admin.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
		admin.Close(context.Background())
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	reader := u.String()

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
	if _, err := migrations.Up(ctx, reader); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("up as a reader: %v, want refused for its rights", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("up as a reader was refused after %s, want at once", d)
	}
}
