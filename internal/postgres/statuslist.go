package postgres

import (
	"slices"
	"strconv"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// terminalStatusesSQL is the predicate of order_events_outcome (migration
// 00010), written out in every query meant to use that index so that
// PostgreSQL can prove the query implies it, whatever the parameters.
const terminalStatusesSQL = `status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired')`

// statusIn returns the condition by which a listing of f finds the orders
// of its statuses, since no index of orders has status (migration 00009),
// or "" when none applies. It appends its parameters to args; limit is the
// listing's LIMIT parameter.
//
//   - Only active statuses: the orders in active_orders (of f's host when
//     it has one), whatever the other filters.
//   - Only terminal statuses and no filter but the cursor: the first page
//     of each status's terminal events, past the cursor, in the listing's
//     direction. Every order has exactly one terminal event, with its final
//     status, so a page of orders is among them; each status is one ordered
//     range of order_events_outcome.
//
// Otherwise another filter's index of orders finds the rows, or (a mix of
// active and terminal statuses and nothing else) the history is read.
func statusIn(f Filter, args *[]any, limit string) string {
	if len(f.Status) == 0 {
		return ""
	}
	param := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	statuses := slices.Compact(slices.Sorted(slices.Values(f.Status)))
	terminal := slices.IndexFunc(statuses, order.Status.Terminal) >= 0
	active := slices.IndexFunc(statuses, func(st order.Status) bool { return !st.Terminal() }) >= 0
	switch {
	case active && !terminal:
		ss := make([]string, len(statuses))
		for i, st := range statuses {
			ss[i] = string(st)
		}
		in := "id IN (SELECT id FROM active_orders WHERE status = ANY(" + param(ss) + ")"
		if f.Host != "" {
			in += " AND host = " + param(f.Host)
		}
		return in + ")"
	case terminal && !active && f.Host == "" && f.Principal == "" && f.Batch == nil && f.Runbook == "" &&
		f.Correlation == "" && f.Action == "" && f.Since == nil && f.Until == nil:
		cmp, dir := "<", " DESC"
		if f.OldestFirst {
			cmp, dir = ">", " ASC"
		}
		cursor := ""
		if f.Cursor != nil {
			cursor = " AND order_id " + cmp + " " + param(*f.Cursor)
		}
		parts := make([]string, len(statuses))
		for i, st := range statuses {
			parts[i] = "(SELECT order_id FROM order_events WHERE status = " + param(string(st)) +
				" AND " + terminalStatusesSQL + cursor + " ORDER BY order_id" + dir + " LIMIT " + limit + ")"
		}
		return "id IN (" + strings.Join(parts, " UNION ALL ") + ")"
	}
	return ""
}
