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

// TestActionLimitedSaysWhenAndWho: the trigger's DETAIL (migration
// 00029) becomes the 429's retry_at and a message that says when, or
// held_by and a message that names the order; a DETAIL that is neither
// (a trigger before 00029) leaves the refusal as it was.
func TestActionLimitedSaysWhenAndWho(t *testing.T) {
	e := actionLimited(&pgconn.PgError{Code: "OR429", Message: "action a ran 1 times in the last 3600 s (at most 1)",
		Hint: "3599", Detail: "retry_at=2026-12-06T10:02:03.123456Z"}).(*order.Error)
	if e.Details["retry_at"] != "2026-12-06T10:02:03.123456Z" || e.Details["retry_after_seconds"] != int64(3599) {
		t.Errorf("details %v", e.Details)
	}
	if want := "action a ran 1 times in the last 3600 s (at most 1); it may run again in 3599 s (at 10:02:03 UTC)"; e.Message != want {
		t.Errorf("message %q, want %q", e.Message, want)
	}
	const id = "01a24abc-72c6-7d3f-87a9-b0c4b9a061b4"
	e = actionLimited(&pgconn.PgError{Code: "OR429", Message: "busy", Hint: "1", Detail: "held_by=" + id}).(*order.Error)
	if e.Details["held_by"] != id || e.Message != "busy; order "+id+" holds the slot: it may run again once that order ends" {
		t.Errorf("%q %v", e.Message, e.Details)
	}
	for _, d := range []string{"", "held_by=", "held_by=x", "retry_at=soon", "other=1"} {
		e = actionLimited(&pgconn.PgError{Code: "OR429", Message: "busy", Hint: "1", Detail: d}).(*order.Error)
		if e.Message != "busy" || len(e.Details) != 2 {
			t.Errorf("DETAIL %q: %q %v, want the refusal as it was", d, e.Message, e.Details)
		}
	}
}
