package postgres_test

import (
	"crypto/rand"
	"errors"
	"os"
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
	// DiskFull is /readyz's, which answers anyone: the refusal, not
	// PostgreSQL's message with the data file's path.
	if msg, ok := postgres.DiskFull(); !ok || !strings.Contains(msg, "53100") || strings.Contains(msg, "base/1/2") {
		t.Errorf("DiskFull() = %q, %v after two refusals; want the refusal without PostgreSQL's file path", msg, ok)
	}
}

// TestInsertOnAFullDiskIsAnsweredAtOnce is TestInsertRefusedForDiskIsNotFenced
// on a real full disk: a cluster of its own on a 160 MiB tmpfs, filled, its
// WAL given a fresh segment first (a WAL that cannot grow stops PostgreSQL,
// docs/reliability.md "A full disk"). Orders whose stdin does not compress
// must grow the table's TOAST relation: each is refused with 53100, its
// backend kept, answered as out of disk; once the fill is removed the same
// order is recorded, once.
func TestInsertOnAFullDiskIsAnsweredAtOnce(t *testing.T) {
	ctx := testenv.Context(t)
	dir, dsn := testenv.PostgresOnTmpfs(t)
	store, pool := testenv.Store(t, dsn+"&pool_max_conns=1")
	for _, stmt := range []string{"SELECT pg_switch_wal()", "CHECKPOINT"} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	var pid int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	fill := testenv.FillDisk(t, dir)
	newOrder := func() *order.Order {
		stdin := make([]byte, 256<<10)
		if _, err := rand.Read(stdin); err != nil {
			t.Fatal(err)
		}
		return &order.Order{ID: order.NewID(), Kind: order.KindExec, Host: "h1", Command: "cat", Stdin: stdin,
			Principal: "p", Source: "rest"}
	}
	var refused *order.Order
	for i := 0; i < 20 && refused == nil; i++ {
		o := newOrder()
		_, err := store.InsertOrder(ctx, o)
		if err == nil {
			continue // a page with room
		}
		var oe *order.Error
		if !errors.As(err, &oe) || oe.Code != order.CodeUnavailable || !strings.Contains(oe.Message, "out of disk space") ||
			!strings.Contains(err.Error(), "53100") {
			t.Fatalf("insert %d on a full disk: %v, want 503 unavailable naming the disk (SQLSTATE 53100)", i, err)
		}
		refused = o
	}
	if refused == nil {
		t.Fatal("20 inserts of 256 KiB each recorded on a full disk")
	}
	var after int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != pid {
		t.Errorf("the pool's backend was %d before the refusal and %d after: the fence terminated it", pid, after)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if _, err := store.InsertOrder(ctx, refused); err != nil {
		t.Fatalf("the refused order submitted again once the disk has room: %v", err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE id = $1`, refused.ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows of the refused order after its retry: %d, %v; want 1", n, err)
	}
}
