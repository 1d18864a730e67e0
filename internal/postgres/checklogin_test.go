package postgres_test

import (
	"testing"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestCheckLoginIsOneStatement: a worker's start checks its login (the
// hosts it may work for, the reads a claim makes) in one statement; it
// was six, one round trip each, up to half a second with a whole fleet's
// workers started at once on a loaded machine (TestFaultsFleet, every
// worker SIGKILLed, docs/decisions.md, hE29). What it finds is
// TestCheckLoginRefusesARoleThatCannotClaim's (worker/role_test.go).
func TestCheckLoginIsOneStatement(t *testing.T) {
	pool, sent := countedPool(t)
	sent.n.Store(0)
	if err := postgres.New(pool).CheckLogin(testenv.Context(t), "h1"); err != nil {
		t.Fatal(err)
	}
	if n := sent.n.Load(); n != 1 {
		t.Fatalf("CheckLogin sent %d statements, want 1", n)
	}
}
