package migrations_test

import (
	"context"
	"slices"
	"testing"
	"time"

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
