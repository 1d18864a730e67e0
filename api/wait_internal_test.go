package api

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/order"
)

// TestWaitRefusalSaysWhatToSend: a wait that is not a number of seconds
// (?wait=10s, Prefer: wait=2m, ?wait=-1) is refused with the same code
// and field as before, and a message that says what wait takes, the value
// to send when the refused one was a duration, and the server's bound. It
// said "wait must be a number of seconds" for each.
func TestWaitRefusalSaysWhatToSend(t *testing.T) {
	for _, tc := range []struct {
		query, prefer string
		max           time.Duration
		want          string
	}{
		{"?wait=10s", "", 5 * time.Minute, "?wait=10s is not a number of seconds: send ?wait=10 (seconds, a fraction such as 0.5 too); a longer wait is cut to the server's http.max_wait of 300 seconds"},
		{"?wait=1m30s", "", 30 * time.Second, "send ?wait=90 (seconds"},
		{"", "wait=2m", 5 * time.Minute, "Prefer: wait=2m is not a number of seconds: send Prefer: wait=120 (seconds"},
		{"?wait=soon", "", 5 * time.Minute, "?wait=soon is not a number of seconds: send ?wait=30 (seconds"},
		{"?wait=-1", "", 5 * time.Minute, "?wait=-1 is negative: send a number of seconds from 0 (0: answer at once); a longer wait is cut to the server's http.max_wait of 300 seconds"},
		{"?wait=10s", "", 0, "send ?wait=10 (seconds, a fraction such as 0.5 too); this server's http.max_wait is 0, so it answers at once whatever the wait"},
		{"?wait=%01", "", time.Minute, "?wait=? is not a number of seconds"},
	} {
		r := httptest.NewRequest("POST", "/v1/orders"+tc.query, nil)
		if tc.prefer != "" {
			r.Header.Set("Prefer", tc.prefer)
		}
		_, err := waitOf(r, tc.max)
		var e *order.Error
		if !errors.As(err, &e) || e.Code != order.CodeInvalid || e.Details["field"] != "wait" || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%s %s: %v, want invalid_request on wait saying %q", tc.query, tc.prefer, err, tc.want)
		}
	}
	for _, tc := range []struct {
		query, prefer string
		want          time.Duration
	}{
		{"?wait=10", "", 10 * time.Second},
		{"", "wait=2.5", 2500 * time.Millisecond},
		{"?wait=600", "", 5 * time.Minute},
		{"", "", 0},
	} {
		r := httptest.NewRequest("POST", "/v1/orders"+tc.query, nil)
		if tc.prefer != "" {
			r.Header.Set("Prefer", tc.prefer)
		}
		if got, err := waitOf(r, 5*time.Minute); err != nil || got != tc.want {
			t.Errorf("%s %s: %v, %v, want %v", tc.query, tc.prefer, got, err, tc.want)
		}
	}
}
