package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
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

// TestEventsEndWhenTheCredentialGoes: a live stream lasts as long as its
// order, so it checks its credential as it goes: a token removed (by a
// reload) ends the streams it opened, without their finished event.
func TestEventsEndWhenTheCredentialGoes(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	o := e.submit("bob", map[string]any{"host": "h1", "command": "sleep", "args": []string{"30"}}, "", http.StatusAccepted)
	began := time.Now()
	time.AfterFunc(time.Second, func() { e.revoke("bob") })
	code, evs := e.events("bob", o.ID, func(event, _ string) bool { return event == "finished" })
	if code != http.StatusOK || time.Since(began) > 10*time.Second {
		t.Fatalf("the stream went on %s after the token was revoked: %d %v", time.Since(began).Round(time.Millisecond), code, evs)
	}
	for _, ev := range evs {
		if strings.HasPrefix(ev, "finished") {
			t.Errorf("the stream reached the order's end: %v", evs)
		}
	}
	e.do("admin", "POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{"signal": "SIGKILL"})
}

// TestEventsLeaveNoConsumerBehind: a live stream's consumer goes with its
// client. Left to the server's inactivity threshold (a minute), every
// client that came and went held one, with three goroutines of serve's
// embedded server: after a 20-minute mixed load, 546 of serve's 623
// goroutines belonged to streams whose clients had left.
func TestEventsLeaveNoConsumerBehind(t *testing.T) {
	e := newAPIEnv(t, envOptions{}) // no worker: the order stays queued
	o := e.submit("alice", map[string]any{"host": "h1", "command": "true"}, "", http.StatusAccepted)
	ctx := testenv.Context(t)
	live, err := e.q.JetStream().Stream(ctx, queue.LiveStream)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		n := 0
		for range live.ConsumerNames(ctx).Name() {
			n++
		}
		return n
	}
	open := -1
	code, evs := e.events("alice", o.ID, func(event, _ string) bool {
		open = consumers()
		return event == "queued" // the client leaves here
	})
	if code != http.StatusOK || open != 1 {
		t.Fatalf("stream %d %v with %d live consumers, want 200 and 1", code, evs, open)
	}
	testenv.WaitUntil(t, 10*time.Second, "the stream's consumer gone with its client", func() bool { return consumers() == 0 })
}
