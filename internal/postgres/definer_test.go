package postgres_test

import (
	"slices"
	"testing"
)

// TestDefinerFunctionsKeepTheirFixedSearchPath: the triggers that a
// worker's update of an order fires (orders_erase, orders_track_active)
// run as the tables' owner, so that a worker role needs no rights on
// active_orders, order_processes or runbook_delegations (00011), and
// every function that runs so has a search_path of the schema, then
// pg_temp: without it the function resolved tables by the caller's
// search_path, where pg_temp comes first unless named, and a worker's
// temporary active_orders stood in for the real one, written with the
// owner's rights. CREATE OR REPLACE FUNCTION resets both (00030 replaced
// orders_track_active and set them again): a migration that forgets
// fails here.
func TestDefinerFunctionsKeepTheirFixedSearchPath(t *testing.T) {
	e := newStoreEnv(t)
	definers := e.texts(`SELECT proname::text FROM pg_proc
		WHERE pronamespace = current_schema()::regnamespace AND prosecdef ORDER BY proname`)
	for _, f := range []string{"orders_erase", "orders_track_active"} {
		if !slices.Contains(definers, f) {
			t.Errorf("%s() runs with its caller's rights; the definer functions: %v", f, definers)
		}
	}
	loose := e.texts(`SELECT proname::text FROM pg_proc
		WHERE pronamespace = current_schema()::regnamespace AND prosecdef
		AND NOT coalesce(proconfig @> ARRAY['search_path=' || quote_ident(current_schema()) || ', pg_temp'], false)
		ORDER BY proname`)
	if len(loose) > 0 {
		t.Errorf("definer functions without the search_path %q: %v", "<schema>, pg_temp", loose)
	}
}
