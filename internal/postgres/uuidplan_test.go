package postgres_test

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUUIDParametersEncode: with encodeUUIDs a uuid.UUID parameter goes
// in binary through pgtype's UUID codec, and every shape the store uses
// still means the same: a uuid, a nil and a set *uuid.UUID, a []uuid.UUID
// for ANY, and a uuid where the statement wants text.
func TestUUIDParametersEncode(t *testing.T) {
	ctx := testenv.Context(t)
	pool, err := postgres.Open(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	u, v := uuid.New(), uuid.New()
	var got uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT $1::uuid`, u).Scan(&got); err != nil || got != u {
		t.Fatalf("uuid: %v %v, want %v", got, err, u)
	}
	var isNull bool
	var none *uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT $1::uuid IS NULL`, none).Scan(&isNull); err != nil || !isNull {
		t.Fatalf("nil *uuid.UUID: null=%v %v", isNull, err)
	}
	if err := pool.QueryRow(ctx, `SELECT $1::uuid`, &v).Scan(&got); err != nil || got != v {
		t.Fatalf("*uuid.UUID: %v %v, want %v", got, err, v)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM unnest(ARRAY[$1::uuid, $2::uuid]) x WHERE x = ANY($3)`, u, v,
		[]uuid.UUID{v, uuid.New()}).Scan(&n); err != nil || n != 1 {
		t.Fatalf("ANY([]uuid.UUID): %d %v, want 1", n, err)
	}
	var s string
	if err := pool.QueryRow(ctx, `SELECT $1::text`, u).Scan(&s); err != nil || s != u.String() {
		t.Fatalf("uuid as text: %q %v, want %q", s, err, u.String())
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	plan := conn.Conn().TypeMap().PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, u)
	// Not pgx's default, the driver.Valuer plan (a string, a failed
	// binary encode, a parse, then binary).
	if name := fmt.Sprintf("%T", plan); name != "*postgres.uuidEncodePlan" {
		t.Fatalf("uuid.UUID is encoded by %s", name)
	}
	buf, err := plan.Encode(u, nil)
	if err != nil || string(buf) != string(u[:]) {
		t.Fatalf("binary encode: %x %v, want the 16 bytes %x", buf, err, u[:])
	}
}
