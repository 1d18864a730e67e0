package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestFanOutPatternMatchingNothingIsRefused: a fan-out's glob that matches
// no known host refuses the whole request, naming the pattern, even when
// the other patterns match: it ran on the others and said nothing before,
// so a typo in one pattern went unnoticed.
func TestFanOutPatternMatchingNothingIsRefused(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	for _, h := range []string{"pat-1", "pat-2"} {
		if err := e.store.TouchHost(ctx, h, "1.0", h+"/1"); err != nil {
			t.Fatal(err)
		}
	}
	code, body := e.do("admin", http.MethodPost, "/v1/orders", map[string]any{"hosts": []string{"pat-*", "zz-*"}, "command": "true"})
	var eb api.ErrorBody
	if code != http.StatusUnprocessableEntity || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "unprocessable" ||
		!strings.Contains(eb.Error.Message, `host pattern "zz-*" matches no known host`) {
		t.Fatalf("a fan-out with a pattern matching nothing: %d %s", code, body)
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d orders recorded (%v), want none", n, err)
	}
	code, body = e.do("admin", http.MethodPost, "/v1/orders", map[string]any{"hosts": []string{"pat-*"}, "command": "true"})
	var b struct{ Orders []json.RawMessage }
	if code != http.StatusAccepted || json.Unmarshal(body, &b) != nil || len(b.Orders) != 2 {
		t.Fatalf("a fan-out to pat-*: %d %s", code, body)
	}
}

// TestFanOutEmptyHostsNamesHosts: "hosts": [] without host was taken for
// no hosts at all, and the order was refused for host, which the client
// never sent.
func TestFanOutEmptyHostsNamesHosts(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	code, body := e.do("admin", http.MethodPost, "/v1/orders", map[string]any{"hosts": []string{}, "command": "ls"})
	var eb api.ErrorBody
	if code != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "invalid_request" ||
		eb.Error.Details["field"] != "hosts" || !strings.Contains(eb.Error.Message, "hosts is empty") {
		t.Fatalf("an empty hosts: %d %s", code, body)
	}
	// Beside a host, an empty list names no second target: the order
	// goes to the host, as it did.
	code, body = e.do("admin", http.MethodPost, "/v1/orders", map[string]any{"host": "empty-1", "hosts": []string{}, "command": "ls"})
	if code != http.StatusAccepted {
		t.Fatalf("host with an empty hosts: %d %s", code, body)
	}
}
