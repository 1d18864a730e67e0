package migrations_test

import (
	"slices"
	"testing"

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
