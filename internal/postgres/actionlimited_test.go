package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly-run/orderly/internal/order"
)

// TestActionLimitedAllocatesNothingOnSuccess: every insert asks whether
// its outcome is an action limit's refusal, and nearly all succeeded;
// answering nil for a nil error must not allocate errors.As's target
// (docs/benchmarks.md, "The async submit after group commit, profiled").
// The refusal itself is still read as before.
func TestActionLimitedAllocatesNothingOnSuccess(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		if actionLimited(nil) != nil {
			t.Fatal("a nil error read as a limit")
		}
	}); n != 0 {
		t.Errorf("actionLimited(nil): %.0f allocations, want 0", n)
	}
	err := actionLimited(&pgconn.PgError{Code: "OR429", Message: "the action's limit", Hint: "7"})
	if order.ErrorCode(err) != order.CodeRateLimited {
		t.Fatalf("an OR429 refusal: %v, want rate_limited", err)
	}
	if e := err.(*order.Error); e.Details["retry_after_seconds"] != int64(7) {
		t.Errorf("retry_after_seconds %v, want 7", e.Details["retry_after_seconds"])
	}
}
