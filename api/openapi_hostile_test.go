package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
)

// TestSpecQueryStringsParsedWhole: a query string that does not parse, or
// that gives a parameter twice, is 400 invalid_request naming it, on
// every native operation that reads its query; r.URL.Query() dropped the
// unparsable pair (?principal=bob%zz listed every principal's orders)
// and Get took the first of two values (?host=h1&host=h2 answered h1's
// orders). Only GET /v1/orders' status may repeat. Each answer matches
// the spec, and a refused submission records nothing.
func TestSpecQueryStringsParsedWhole(t *testing.T) {
	count := config.Action{Name: "count", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "n", Type: "int", Min: ptrTo[int64](1), Max: ptrTo[int64](5)}},
		Command: []string{"/bin/echo", "{n}"}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{count}}})
	sc := newSpecChecker(t, e)
	batch := "01a23c5f-57a1-7a06-9f43-3905bcf9b89f"
	submit := map[string]any{"host": "h1", "command": "true"}
	before := countOrders(t, e)
	for _, c := range []struct {
		call
		field string
	}{
		{call{as: "admin", method: "GET", path: "/v1/orders?principal=bob%zz"}, "query"},
		{call{as: "admin", method: "GET", path: "/v1/orders?principal=bob;host=h1"}, "query"},
		{call{as: "admin", method: "GET", path: "/v1/orders?host=h1&host=h2"}, "host"},
		{call{as: "admin", method: "GET", path: "/v1/orders?limit=1&limit=1000"}, "limit"},
		{call{as: "admin", method: "GET", path: "/v1/orders?principal=alice&principal=bob"}, "principal"},
		{call{as: "alice", method: "POST", path: "/v1/orders?wait=0&wait=20", body: submit}, "wait"},
		{call{as: "alice", method: "POST", path: "/v1/orders?wait=%zz", body: submit}, "query"},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run?wait=1&wait=2", body: map[string]any{"host": "h1", "params": map[string]any{"n": 1}}}, "wait"},
		{call{as: "alice", method: "GET", path: "/v1/actions/count/choices?host=h1&host=h2"}, "host"},
		{call{as: "alice", method: "GET", path: "/v1/batches/" + batch + "?outputs=none&outputs=full"}, "outputs"},
		{call{as: "admin", method: "DELETE", path: "/v1/hosts/nosuch?abandon=false&abandon=true"}, "abandon"},
		{call{as: "admin", method: "POST", path: "/v1/admin/reload?confirm=a&confirm=b"}, "confirm"},
	} {
		c.invalid = true
		resp, b := sc.do(c.call)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"code":"invalid_request"`) ||
			!strings.Contains(string(b), `"field":"`+c.field+`"`) {
			t.Errorf("%s %s: %d %s, want 400 invalid_request on %s", c.method, c.path, resp.StatusCode, b, c.field)
		}
	}
	if after := countOrders(t, e); after != before {
		t.Errorf("%d orders recorded by refused submissions", after-before)
	}
	// Statuses may be repeated (the spec's explode: true).
	if resp, b := sc.do(call{as: "alice", method: "GET", path: "/v1/orders?status=succeeded&status=failed,queued&foo=1"}); resp.StatusCode != http.StatusOK {
		t.Errorf("repeated status: %d %s", resp.StatusCode, b)
	}
}
