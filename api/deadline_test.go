package api_test

import (
	"encoding/json"
	"net/http"
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

// TestDeliverByAnAnswerCanWrite: a deliver_by whose UTC year is outside
// 0000-9999 is refused with 422 (REST and NATS alike), since answers write
// it in UTC as RFC 3339. 9999-12-31T23:59:59-23:59 was accepted with a 202
// and an empty body, and every later answer or listing holding the order
// was empty too. The last instant RFC 3339 can write still runs.
func TestDeliverByAnAnswerCanWrite(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	for _, by := range []string{"9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"} {
		code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"host": "far", "command": "true", "deliver_by": by})
		var env struct {
			Error struct{ Code, Message string }
		}
		if code != http.StatusUnprocessableEntity || json.Unmarshal(b, &env) != nil || env.Error.Code != "unprocessable" {
			t.Errorf("deliver_by %s: %d %s, want 422 unprocessable", by, code, b)
		}
		if a := e.publish("alice", "far", "", map[string]any{"command": "true", "deliver_by": by}); a.Error == nil || a.Error.Code != "unprocessable" {
			t.Errorf("deliver_by %s over NATS: %+v, want unprocessable", by, a)
		}
	}
	o := e.submit("alice", map[string]any{"host": "far", "command": "true", "deliver_by": "9999-12-31T23:59:59.999999Z"}, "", http.StatusAccepted)
	if o.ExpiresAt == nil || o.ExpiresAt.Year() != 9999 {
		t.Fatalf("the last writable instant: expires_at %v", o.ExpiresAt)
	}
	code, b := e.do("alice", "GET", "/v1/orders?host=far", nil)
	var list struct{ Orders []json.RawMessage }
	if code != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Orders) != 1 {
		t.Errorf("listing: %d %s", code, b)
	}
}
