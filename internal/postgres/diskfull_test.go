package postgres_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestInsertRefusedForDiskIsNotFenced: PostgreSQL out of disk refuses an
// insert with an ERROR (SQLSTATE 53100, "could not extend file") and keeps
// the session. The insert was taken for a broken connection: the fence
// terminated the pool's backend (waiting for it to exit), looked the order
// up, inserted it once more into the same full disk and answered "the
// connection broke before the order was recorded". The refusal is now
// answered at once: one insert, the backend kept, a 503 that says the
// disk is full and that nothing was recorded, and DiskFull (for /readyz)
// says so. A trigger raises disk_full, as a table that cannot grow does.
func TestInsertRefusedForDiskIsNotFenced(t *testing.T) {
	ctx := testenv.Context(t)
	store, pool := testenv.Store(t, testenv.Postgres(t)+"&pool_max_conns=1")
	if _, err := pool.Exec(ctx, `CREATE SEQUENCE disk_full_tries;
		CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM nextval('disk_full_tries');
			RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device' USING ERRCODE = 'disk_full';
		END $$;
		CREATE TRIGGER disk_full BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION disk_full()`); err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "k1"} {
		o := &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h1", Command: "true", Principal: "p", Source: "rest",
			IdempotencyKey: key}
		_, err := store.InsertOrder(ctx, o)
		var oe *order.Error
		if !errors.As(err, &oe) || oe.Code != order.CodeUnavailable {
			t.Fatalf("insert (key %q) refused for disk: %v, want code %s", key, err, order.CodeUnavailable)
		}
		if !strings.Contains(oe.Message, "out of disk space") || !strings.Contains(oe.Message, "nothing was recorded") {
			t.Errorf("insert (key %q) refused for disk answered %q; want it to name the disk and say nothing was recorded", key, oe.Message)
		}
	}
	var tries, after int
	if err := pool.QueryRow(ctx, `SELECT last_value FROM disk_full_tries`).Scan(&tries); err != nil {
		t.Fatal(err)
	}
	if tries != 2 {
		t.Errorf("inserts tried for 2 submissions: %d, want 2 (one each)", tries)
	}
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != pid {
		t.Errorf("the pool's backend was %d before the refusals and %d after: the fence terminated it", pid, after)
	}
	if msg, ok := postgres.DiskFull(); !ok || !strings.Contains(msg, "53100") || !strings.Contains(msg, "No space left on device") {
		t.Errorf("DiskFull() = %q, %v after two refusals; want the refusal", msg, ok)
	}
}
