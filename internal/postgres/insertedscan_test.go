package postgres_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestInsertReturnsItsTimesAsPgxScans: InsertOrder scans the times its
// statement returns (submitted_at, expires_at) with plans its connection
// keeps for them; they are what pgx's own Scan of the recorded row gives,
// to the microsecond and in the same zone, with a deadline and without
// one (NULL), alone and in a group, on one connection whose order scans
// (other types in the same first columns) come between the inserts, and
// on a pool that keeps no plans (pgx's Scan, times in the local zone).
func TestInsertReturnsItsTimesAsPgxScans(t *testing.T) {
	ctx := testenv.Context(t)
	dsn := testenv.Postgres(t)
	one, err := postgres.OpenTweaked(ctx, dsn, func(c *pgxpool.Config) { c.MaxConns = 1 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(one.Close)
	plain, err := pgxpool.New(ctx, dsn) // no AfterConnect: no plans kept
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(plain.Close)

	deadline := time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.FixedZone("x", 3600))
	withDeadline := func(o *order.Order) { o.ExpiresAt = &deadline }
	withExpiresIn := func(o *order.Order) { o.ExpiresIn = 90 * time.Second }
	check := func(pool *pgxpool.Pool, what string, o *order.Order) {
		t.Helper()
		var sub time.Time
		var exp *time.Time
		if err := pool.QueryRow(ctx, `SELECT submitted_at, expires_at FROM orders WHERE id = $1`, o.ID).Scan(&sub, &exp); err != nil {
			t.Fatal(err)
		}
		if !o.SubmittedAt.Equal(sub) || o.SubmittedAt.Location().String() != sub.Location().String() {
			t.Errorf("%s: submitted_at %v, pgx scans %v", what, o.SubmittedAt, sub)
		}
		switch {
		case (o.ExpiresAt == nil) != (exp == nil):
			t.Errorf("%s: expires_at %v, pgx scans %v", what, o.ExpiresAt, exp)
		case exp != nil && (!o.ExpiresAt.Equal(*exp) || o.ExpiresAt.Location().String() != exp.Location().String()):
			t.Errorf("%s: expires_at %v, pgx scans %v", what, *o.ExpiresAt, *exp)
		}
	}
	for _, p := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"plans kept", one}, {"no plans", plain}} {
		store := postgres.New(p.pool)
		for i, mod := range []func(*order.Order){nil, withDeadline, withExpiresIn, nil, withDeadline} {
			o := plainOrder("scan-1", mod)
			if prev, err := store.InsertOrder(ctx, o); err != nil || prev != nil {
				t.Fatalf("%s, insert %d: existing %v, %v", p.name, i, prev, err)
			}
			check(p.pool, p.name, o)
			if i%2 == 0 { // the order scan on the same connection, between inserts
				if _, err := store.GetOrder(ctx, o.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	e := newStoreEnv(t)
	rest := []*order.Order{plainOrder("scan-2", withDeadline), plainOrder("scan-2", nil), plainOrder("scan-2", withExpiresIn)}
	first, got := e.grouped(plainOrder("scan-2", withDeadline), rest)
	if first.err != nil {
		t.Fatal(first.err)
	}
	check(e.pool, "the first, alone", first.o)
	for i, g := range got {
		if g.err != nil || g.prev != nil {
			t.Fatalf("group insert %d: existing %v, %v", i, g.prev, g.err)
		}
		check(e.pool, "in a group", g.o)
	}
	if xs := e.xmins(rest[0].ID, rest[1].ID, rest[2].ID); len(xs) != 1 {
		t.Errorf("the three were recorded by transactions %v, want one group", xs)
	}
}
