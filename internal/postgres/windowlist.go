package postgres

import (
	"strconv"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// offClockMs is how far apart, in milliseconds, an order's id (a UUIDv7:
// the API's clock when it made the id) and its submitted_at (PostgreSQL's
// clock at the insert) may be for windowIn to find it by its id: the
// predicate of the index orders_off_clock (migration 00019) holds the
// others, and must say the same number.
const offClockMs = 30_000

// windowIn returns the two conditions by which a listing of f with since
// or until finds its orders without walking the history, or "" when f has
// neither. It appends their parameters to args.
//
// The listing is by submitted_at and in id order, and nothing ties the two
// clocks, so PostgreSQL walked the orders from the newest (or the oldest)
// until it had a page: for a window a month back, the month after it. Its
// orders are now those of two pages, each with all of f's conditions and
// in the listing's direction, which ListOrders merges:
//
//   - inWindow: the orders whose ids fall in the window widened by
//     offClockMs on each side, one range of an index on id. Every order of
//     the window whose id and submitted_at are at most offClockMs apart is
//     there.
//   - offClock: the others, further apart, from the partial index
//     orders_off_clock, which is empty while the API's and PostgreSQL's
//     clocks agree and ids are UUIDv7s.
//
// The two are disjoint and between them hold every order of the window, so
// a page of the listing is among their first pages, and the answer, its
// order and its cursor are those of the plain query: submitted_at is still
// compared exactly; the ids only say where to look.
func windowIn(f Filter, args *[]any) (inWindow, offClock string) {
	if f.Since == nil && f.Until == nil {
		return "", ""
	}
	param := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	var bounds []string
	// One more millisecond each side than orders_clock_gap allows, against
	// any rounding of the times to PostgreSQL's microseconds.
	if f.Since != nil {
		if ms := f.Since.UnixMilli() - offClockMs - 1; ms > 0 {
			bounds = append(bounds, "id >= "+param(order.IDAt(ms)))
		}
	}
	if f.Until != nil {
		if ms := f.Until.UnixMilli() + offClockMs + 2; ms < 1<<48 {
			bounds = append(bounds, "id < "+param(order.IDAt(max(ms, 0))))
		}
	}
	if len(bounds) == 0 {
		return "", "" // a window wider than UUIDv7's time: nothing to bound
	}
	inWindow = strings.Join(bounds, " AND ")
	// The predicate of orders_off_clock, written out so that PostgreSQL
	// can prove the query implies it.
	offClock = "orders_clock_gap(id, submitted_at) > " + strconv.Itoa(offClockMs) + " AND NOT (" + inWindow + ")"
	return inWindow, offClock
}
