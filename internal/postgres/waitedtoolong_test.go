package postgres_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStatementPastLockOrStatementTimeoutIsUnavailable: with lock_timeout
// or statement_timeout set in database_url (deploy.md suggests the first
// for migrations, and the URL is every process's), a statement waiting
// behind another session's lock on orders (an operator's LOCK TABLE left
// open) was refused with 55P03 or 57014, and the API answered the insert
// and the read 500 "internal error". Both are 503 `unavailable`, the
// insert saying that nothing was recorded.
func TestStatementPastLockOrStatementTimeoutIsUnavailable(t *testing.T) {
	for _, setting := range []string{"lock_timeout", "statement_timeout"} {
		t.Run(setting, func(t *testing.T) {
			ctx := testenv.Context(t)
			dsn := testenv.Postgres(t)
			holder, err := postgres.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(holder.Close)
			o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h1", Command: "true", Principal: "p", Source: "rest"}
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tx.Rollback(ctx) })
			if _, err := tx.Exec(ctx, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			pool, err := postgres.Open(ctx, dsn+sep+setting+"=300")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			store := postgres.New(pool)
			_, err = store.InsertOrder(ctx, o)
			var oe *order.Error
			if !errors.As(err, &oe) || oe.Code != order.CodeUnavailable || !strings.Contains(oe.Message, "nothing was recorded") {
				t.Errorf("insert behind the lock: %v, want code %s saying nothing was recorded", err, order.CodeUnavailable)
			}
			_, err = store.GetOrder(ctx, o.ID)
			if !errors.As(err, &oe) || oe.Code != order.CodeUnavailable {
				t.Errorf("read behind the lock: %v, want code %s", err, order.CodeUnavailable)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := store.InsertOrder(ctx, o); err != nil {
				t.Errorf("insert once the lock is released: %v", err)
			}
		})
	}
}
