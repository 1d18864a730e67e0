package api_test

import (
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/testenv"
)

// TestDeadlineOnPostgresClock: expires_in_seconds counts from the
// submission on PostgreSQL's clock, the one the claim and the expiry job
// judge the deadline by, so the stored deadline is exactly submitted_at
// plus it. Computed on the API host's clock, an API a few minutes behind
// PostgreSQL expired such orders before they could run, and one ahead
// kept them that much longer. deliver_by is an instant and is stored as
// sent; the earlier of the two wins.
func TestDeadlineOnPostgresClock(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	by := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	for _, tc := range []struct {
		name string
		body map[string]any
		want func(submitted time.Time) time.Time
	}{
		{"expires_in_seconds", map[string]any{"expires_in_seconds": 60},
			func(s time.Time) time.Time { return s.Add(time.Minute) }},
		{"a fraction", map[string]any{"expires_in_seconds": 0.25},
			func(s time.Time) time.Time { return s.Add(250 * time.Millisecond) }},
		{"less than a microsecond", map[string]any{"expires_in_seconds": 1e-10},
			func(s time.Time) time.Time { return s.Add(time.Microsecond) }},
		{"earlier than deliver_by", map[string]any{"expires_in_seconds": 60, "deliver_by": by.Format(time.RFC3339Nano)},
			func(s time.Time) time.Time { return s.Add(time.Minute) }},
		{"deliver_by earlier", map[string]any{"expires_in_seconds": 7200, "deliver_by": by.Format(time.RFC3339Nano)},
			func(time.Time) time.Time { return by }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"host": "nowhere", "command": "true"}
			for k, v := range tc.body {
				body[k] = v
			}
			o := e.submit("alice", body, "", 202)
			var submitted, expires time.Time
			if err := e.pool.QueryRow(testenv.Context(t), `SELECT submitted_at, expires_at FROM orders WHERE id = $1`, o.ID).
				Scan(&submitted, &expires); err != nil {
				t.Fatal(err)
			}
			if want := tc.want(submitted); !expires.Equal(want) {
				t.Errorf("expires_at %s, want %s (submitted_at %s)", expires.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano),
					submitted.Format(time.RFC3339Nano))
			}
			if o.ExpiresAt == nil || !o.ExpiresAt.Equal(expires) {
				t.Errorf("the answer's expires_at is %v, stored %s", o.ExpiresAt, expires.Format(time.RFC3339Nano))
			}
		})
	}
}
