package postgres_test

import (
	"strconv"
	"strings"
	"testing"
)

// TestAnalyzeOfOrdersFaultsUnderAPagePerRow counts the minor page faults
// of the backend that runs one ANALYZE of orders holding 30,000 orders,
// the sample's whole size: the statistics object on orders_clock_gap
// evaluates the function for every sampled row, and its six uuid_send
// buffers (1 KiB each, kept until the ANALYZE ended) took ~46,000 faults
// at 25,600 rows, autovacuum's every minute while the table is small and
// busy (docs/decisions.md, hB28). Reading the id's hex digits, the
// ANALYZE faults under one page per row.
func TestAnalyzeOfOrdersFaultsUnderAPagePerRow(t *testing.T) {
	e := newStoreEnv(t)
	const n = 30000
	e.exec(`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at)
	SELECT gen_random_uuid(), 'nowhere', 'queued', 'true', 60000, 'alice', now() - interval '1 day' + i * interval '1 ms'
	FROM generate_series(1, $1) i`, n)
	conn, err := e.pool.Acquire(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// minflt of the backend itself: /proc/self/stat's tenth field, the
	// eighth after the command name's ')'.
	faults := func() int {
		var stat string
		if err := conn.QueryRow(e.ctx, `SELECT pg_read_file('/proc/self/stat')`).Scan(&stat); err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
		v, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("/proc/self/stat %q: %v", stat, err)
		}
		return v
	}
	before := faults()
	if _, err := conn.Exec(e.ctx, `ANALYZE orders`); err != nil {
		t.Fatal(err)
	}
	if got := faults() - before; got >= n {
		t.Fatalf("ANALYZE of orders over %d orders: %d page faults of its backend; want under one a row", n, got)
	} else {
		t.Logf("ANALYZE of orders over %d orders: %d page faults", n, got)
	}
}

// TestOrdersClockGapIsTheIdsTimeLessTheInsert: the function the index
// orders_off_clock and its statistics read gives, for ids of every
// leading byte and times around theirs, the gap between the id's 48 bits
// (bytes 0 – 5, read one by one) and submitted_at in whole milliseconds,
// and stays inlined into the index's predicate: an insert calls no SQL
// function (pg_stat_user_functions, track_functions = all).
func TestOrdersClockGapIsTheIdsTimeLessTheInsert(t *testing.T) {
	e := newStoreEnv(t)
	var wrong int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM (
		SELECT gen_random_uuid() AS id, now() - i * interval '7 s 3 ms 11 us' AS at FROM generate_series(1, 50000) i) s
	WHERE orders_clock_gap(id, at) IS DISTINCT FROM abs(
		((get_byte(uuid_send(id), 0)::bigint << 40) | (get_byte(uuid_send(id), 1)::bigint << 32)
		| (get_byte(uuid_send(id), 2)::bigint << 24) | (get_byte(uuid_send(id), 3)::bigint << 16)
		| (get_byte(uuid_send(id), 4)::bigint << 8) | get_byte(uuid_send(id), 5)::bigint)
		- floor(extract(epoch FROM at - timestamptz '1970-01-01 00:00:00+00') * 1000)::bigint)`).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong != 0 {
		t.Fatalf("orders_clock_gap differs from the id's bytes less submitted_at for %d of 50,000 ids", wrong)
	}
	conn, err := e.pool.Acquire(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, sql := range []string{
		`SET track_functions = 'all'`,
		`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at)
		SELECT gen_random_uuid(), 'nowhere', 'queued', 'true', 60000, 'alice', now() FROM generate_series(1, 100)`,
		`SELECT pg_stat_force_next_flush()`,
		`SET track_functions = 'none'`,
	} {
		if _, err := conn.Exec(e.ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var calls int64
	if err := conn.QueryRow(e.ctx, `SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'orders_clock_gap'`).Scan(&calls); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Fatalf("100 inserts called orders_clock_gap %d times: it is no longer inlined into orders_off_clock's predicate", calls)
	}
}
