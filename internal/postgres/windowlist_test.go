package postgres_test

import (
	"crypto/rand"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// idAt is a UUIDv7 made on a clock that read t.
func idAt(t time.Time) uuid.UUID {
	var u uuid.UUID
	_, _ = rand.Read(u[6:])
	ms := t.UnixMilli()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u
}

// A listing by time window finds the window's orders by their ids (migration
// 00019), yet answers exactly what submitted_at selects, in id order, page
// by page, in both directions: orders whose ids were made on a clock 29 s,
// 31 s or an hour off PostgreSQL's, or that are not UUIDv7s at all, are
// listed where the plain query lists them.
func TestListByWindowIsExact(t *testing.T) {
	e := newStoreEnv(t)
	base := time.Now().Add(-10 * 24 * time.Hour).Truncate(time.Minute)
	var (
		ids   []string
		times []time.Time
	)
	for i := range 400 {
		at := base.Add(time.Duration(i) * 30 * time.Second) // 200 minutes
		var id uuid.UUID
		switch i % 8 {
		case 1:
			id = idAt(at.Add(-29 * time.Second))
		case 2:
			id = idAt(at.Add(31 * time.Second))
		case 3:
			id = idAt(at.Add(-31 * time.Second))
		case 4:
			id = idAt(at.Add(time.Hour))
		case 5:
			id = idAt(at.Add(-time.Hour))
		case 6:
			id = uuid.New() // not a UUIDv7
		default:
			id = idAt(at.Add(-time.Duration(i%5) * time.Millisecond))
		}
		ids, times = append(ids, id.String()), append(times, at)
	}
	e.exec(`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at)
		SELECT id, 'h' || (n % 2), 'succeeded', 'true', 60000, 'alice', at
		FROM unnest($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS o(id, at, n)`, ids, times)
	e.exec(`ANALYZE orders`)
	var off int
	if err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM orders WHERE orders_clock_gap(id, submitted_at) > 30000`).Scan(&off); err != nil {
		t.Fatal(err)
	}
	if off != 250 { // 31 s, -31 s, +1 h, -1 h, and UUIDv4s
		t.Fatalf("%d orders off clock, want 250", off)
	}

	at := func(min float64) *time.Time {
		x := base.Add(time.Duration(min * float64(time.Minute)))
		return &x
	}
	for _, tc := range []struct {
		name         string
		since, until *time.Time
		host         string
	}{
		{"an hour", at(60), at(120), ""},
		{"an hour, a host", at(60), at(120), "h1"},
		{"since", at(150), nil, ""},
		{"until", nil, at(40), ""},
		{"odd bounds", at(33.3333), at(33.6), ""},
		{"before all", at(-600), at(-1), ""},
		{"around all", at(-600), at(600), ""},
	} {
		for _, oldest := range []bool{false, true} {
			cond, args := []string{"true"}, []any{}
			if tc.since != nil {
				args = append(args, *tc.since)
				cond = append(cond, "submitted_at >= $"+strconv.Itoa(len(args)))
			}
			if tc.until != nil {
				args = append(args, *tc.until)
				cond = append(cond, "submitted_at < $"+strconv.Itoa(len(args)))
			}
			if tc.host != "" {
				args = append(args, tc.host)
				cond = append(cond, "host = $"+strconv.Itoa(len(args)))
			}
			dir := " DESC"
			if oldest {
				dir = ""
			}
			rows, err := e.pool.Query(e.ctx, `SELECT id FROM orders WHERE `+strings.Join(cond, " AND ")+` ORDER BY id`+dir, args...)
			if err != nil {
				t.Fatal(err)
			}
			want, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil {
				t.Fatal(err)
			}
			got := e.allPages(postgres.Filter{Since: tc.since, Until: tc.until, Host: tc.host, Limit: 7, OldestFirst: oldest, NoOutputs: true}, 100)
			if !slices.Equal(got, want) {
				t.Errorf("%s (oldest first %v): %d orders, want %d\n got %v\nwant %v", tc.name, oldest, len(got), len(want), got, want)
			}
		}
	}
}

// A listing by time window costs a page of the window, not the history
// after it: a day three weeks back, on a month of orders (20k, one every
// 2 min, ids made as the API makes them), reads the orders of that day's
// first page and the empty index of the orders off clock. Before, it
// walked the ids back from the newest order, three weeks of them.
// auto_explain sends back each statement's plan with its buffers.
func TestListByWindowReadsTheWindow(t *testing.T) {
	ctx := testenv.Context(t)
	e, log := explainedStore(t, ctx, 1, `SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on;
		SET auto_explain.log_timing = off;`)
	// UUIDv7s of the millisecond before each submission, as the API makes
	// them (made in SQL: 48 bits of time, version 7, variant, a hash).
	e.exec(`INSERT INTO orders (id, host, status, command, timeout_ms, principal, submitted_at, finished_at, stdout, stdout_bytes)
	SELECT (lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint - 1), 12, '0') || '7' || substr(md5(i::text), 1, 3)
			|| '8' || substr(md5(i::text), 4, 15))::uuid,
		'web-' || i % 10, 'succeeded', 'true', 60000, 'alice', t, t + interval '1 s', '\x6f6b0a', 3
	FROM (SELECT i, now() - interval '30 days' + i * interval '2 min' AS t FROM generate_series(1, 20000) i) s
	ORDER BY t`)
	e.exec(`VACUUM ANALYZE orders`)

	newest := time.Now()
	since, until := newest.Add(-22*24*time.Hour), newest.Add(-21*24*time.Hour)
	for _, tc := range []struct {
		name string
		f    postgres.Filter
	}{
		{"a day three weeks back", postgres.Filter{Since: &since, Until: &until}},
		{"… oldest first", postgres.Filter{Since: &since, Until: &until, OldestFirst: true}},
		{"until three weeks back", postgres.Filter{Until: &until}},
		{"… of a host", postgres.Filter{Until: &until, Host: "web-3"}},
	} {
		tc.f.Limit, tc.f.Lean = 50, true
		log.reset()
		list, _, err := e.store.ListOrders(ctx, tc.f)
		if err != nil || len(list) != 50 {
			t.Fatalf("%s: %d orders, %v", tc.name, len(list), err)
		}
		plans := log.taken()
		if len(plans) != 1 {
			t.Fatalf("%s: auto_explain sent %d plans, want the listing's", tc.name, len(plans))
		}
		var ex struct {
			Query string         `json:"Query Text"`
			Plan  map[string]any `json:"Plan"`
		}
		if err := json.Unmarshal([]byte(plans[0]), &ex); err != nil {
			t.Fatal(err)
		}
		hit, _ := ex.Plan["Shared Hit Blocks"].(float64)
		read, _ := ex.Plan["Shared Read Blocks"].(float64)
		// A page of 50 orders is ~10 pages of orders and a few of its
		// indexes; three weeks of history is ~15k orders (~1,000 pages).
		if hit+read > 100 {
			t.Errorf("%s read %.0f buffers, want a page's (at most 100): %s", tc.name, hit+read, strings.Join(strings.Fields(ex.Query), " "))
		}
	}
}
