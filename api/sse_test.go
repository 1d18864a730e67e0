package api_test

import (
	"net/http"
	"testing"
)

// TestEventsLastEventIDOutOfRange: an id no event can have is the
// client's mistake (400), not an outage (503, an ERROR and the
// unavailable counter): the largest uint64 made the stream start at 0.
func TestEventsLastEventIDOutOfRange(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	o := e.submit("alice", map[string]any{"host": "h1", "command": "true"}, "?wait=10", http.StatusOK)
	for _, id := range []string{"18446744073709551615", "18446744073709551616", "-1", "x"} {
		code, b := e.do("alice", "GET", "/v1/orders/"+o.ID.String()+"/events", nil, "Last-Event-ID", id)
		wantError(t, code, b, http.StatusBadRequest, "invalid_request")
	}
}
