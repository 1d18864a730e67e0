package postgres

import (
	"strconv"
	"strings"

	"github.com/orderly-run/orderly/internal/order"
)

// terminalStatusesSQL is the predicate of order_events_outcome (migration
// 00010), written out in every query meant to use that index so that
// PostgreSQL can prove the query implies it, whatever the parameters.
const terminalStatusesSQL = `status IN ('succeeded','failed','timed_out','killed','canceled','interrupted','rejected','expired')`

// byOutcome reports whether a listing selects finished orders by their
// status and nothing else but the cursor: the listing that no index of
// orders serves since migration 00009, which outcomeIn serves from the
// orders' terminal events instead. With any other filter, that filter's
// index of orders finds the rows.
func byOutcome(f Filter) bool {
	if len(f.Status) == 0 || f.Host != "" || f.Principal != "" || f.Batch != nil || f.Runbook != "" ||
		f.Correlation != "" || f.Action != "" || f.Since != nil || f.Until != nil {
		return false
	}
	for _, st := range f.Status {
		if !st.Terminal() {
			return false
		}
	}
	return true
}

// outcomeIn returns the condition that restricts a byOutcome listing to
// the first page of each status's terminal events: every order has
// exactly one terminal event, with its final status, so a page of orders
// is among the first limit events of each status, past the cursor, in
// the listing's direction. Each status is one ordered range of
// order_events_outcome. It appends its parameters to args; limit is the
// listing's LIMIT parameter.
func outcomeIn(f Filter, args *[]any, limit string) string {
	cmp, dir := "<", " DESC"
	if f.OldestFirst {
		cmp, dir = ">", " ASC"
	}
	param := func(v any) string {
		*args = append(*args, v)
		return "$" + strconv.Itoa(len(*args))
	}
	cursor := ""
	if f.Cursor != nil {
		cursor = " AND order_id " + cmp + " " + param(*f.Cursor)
	}
	parts := make([]string, 0, len(f.Status))
	for _, st := range uniqueStatuses(f.Status) {
		parts = append(parts, "(SELECT order_id FROM order_events WHERE status = "+param(string(st))+
			" AND "+terminalStatusesSQL+cursor+" ORDER BY order_id"+dir+" LIMIT "+limit+")")
	}
	return "id IN (" + strings.Join(parts, " UNION ALL ") + ")"
}

// uniqueStatuses is ss without repeats, in order.
func uniqueStatuses(ss []order.Status) []order.Status {
	var out []order.Status
	for _, st := range ss {
		dup := false
		for _, o := range out {
			dup = dup || o == st
		}
		if !dup {
			out = append(out, st)
		}
	}
	return out
}
