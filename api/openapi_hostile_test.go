package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestSpecQueryStringsParsedWhole: a query string that does not parse,
// that gives a parameter twice or that names one the operation does not
// take is 400 invalid_request naming it, on every native operation that
// reads its query; r.URL.Query() dropped the unparsable pair
// (?principal=bob%zz listed every principal's orders), Get took the first
// of two values (?host=h1&host=h2 answered h1's orders), and an unknown
// one was ignored (POST /v1/orders?dry_run=true ran the command). Only
// GET /v1/orders' status may repeat, and every parameter the spec lists
// is taken. Each answer matches the spec, and a refused submission
// records nothing.
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
		// A parameter the operation does not take, as an unknown field.
		{call{as: "admin", method: "GET", path: "/v1/orders?stauts=failed"}, "stauts"},
		{call{as: "alice", method: "POST", path: "/v1/orders?dry_run=true", body: submit}, "dry_run"},
		{call{as: "alice", method: "GET", path: "/v1/batches/" + batch + "?outputs=none&orders=none"}, "orders"},
		{call{as: "admin", method: "DELETE", path: "/v1/hosts/nosuch?force=true"}, "force"},
		{call{as: "admin", method: "POST", path: "/v1/admin/reload?sha256=abc"}, "sha256"},
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
	if resp, b := sc.do(call{as: "alice", method: "GET", path: "/v1/orders?status=succeeded&status=failed,queued"}); resp.StatusCode != http.StatusOK {
		t.Errorf("repeated status: %d %s", resp.StatusCode, b)
	}
	// Every query parameter the spec gives an operation, the operation
	// takes.
	values := map[string]string{"host": "h1", "status": "failed", "principal": "alice", "batch": batch, "correlation": "c",
		"runbook": "r.md", "action": "count", "since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z", "limit": "1",
		"cursor": batch, "outputs": "none", "abandon": "false", "confirm": "x", "wait": "0"}
	sample := strings.NewReplacer("{id}", batch, "{host}", "nosuch", "{name}", "count")
	for p, item := range sc.doc.Paths.Map() {
		for method, op := range item.Operations() {
			var q []string
			for _, prm := range op.Parameters {
				if prm.Value.In == "query" {
					v, ok := values[prm.Value.Name]
					if !ok {
						t.Fatalf("%s %s: no sample value for ?%s", method, p, prm.Value.Name)
					}
					q = append(q, prm.Value.Name+"="+v)
				}
			}
			if len(q) == 0 {
				continue
			}
			c := call{as: "admin", method: method, path: sample.Replace(p) + "?" + strings.Join(q, "&"), invalid: true}
			if method == http.MethodPost {
				c.body = map[string]any{}
			}
			if _, b := sc.do(c); strings.Contains(string(b), "query parameter") {
				t.Errorf("%s %s: %s", c.method, c.path, b)
			}
		}
	}
}

// TestSpecHostileInput sends hostile input to every native operation —
// malformed, duplicate, case-folded and trailing JSON, numbers out of
// range or as floats and exponents, null for an object, huge arrays,
// deep nesting, invalid UTF-8 and NUL bytes, odd content types and
// encodings, tampered cursors, SQL- and regex-like filters, odd ids,
// headers and tokens — and holds each answer to the 4xx and stable code
// it must be, in a body and with headers the spec describes. None of
// them records an order.
func TestSpecHostileInput(t *testing.T) {
	count := config.Action{Name: "count", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "n", Type: "int", Min: ptrTo[int64](1), Max: ptrTo[int64](5)}},
		Command: []string{"/bin/echo", "{n}"}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{count}}})
	sc := newSpecChecker(t, e)
	// An order that has ended: queued for a host with no worker, canceled.
	o := e.submit("alice", map[string]any{"host": "offline", "command": "true"}, "", http.StatusAccepted)
	if resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/orders/" + o.ID.String() + "/cancel"}); resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel: %d %s", resp.StatusCode, b)
	}
	id := o.ID.String()
	ok := `{"host":"h1","command":"true"}`
	const (
		invalid = "invalid_request"
		unproc  = "unprocessable"
		media   = "unsupported_media"
	)
	cases := []struct {
		c      call
		status int
		code   string
	}{
		// Bodies of POST /v1/orders.
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok + ` x`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok + `{}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","host":"h2"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"HOST":"h1","command":"true"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","expires_in_seconds":1e400}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","max_output_bytes":1.5}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","max_output_bytes":99999999999999999999}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","timeout_seconds":9223372036854775807}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","timeout_seconds":-1e-300}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","timeout_seconds":"5"}`}, 400, invalid},
		// Not 0, but 0 to a float64: this was "no timeout given".
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","timeout_seconds":1e-400}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","expires_in_seconds":1e-400}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","max_output_bytes":1e-400}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","max_output_bytes":1e99999999999999999999}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `null`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `[]`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `"x"`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ``}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","args":[null]}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","stdout":[]}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","env":{"A":null}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","args":[` +
			strings.TrimSuffix(strings.Repeat(`"a",`, 200000), ",") + `]}`}, 413, "too_large"},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: strings.Repeat("[", 10000) + strings.Repeat("]", 10000)}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","env":` +
			strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat("}", 41)}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: "{\"host\":\"h1\",\"command\":\"tr\xffue\"}"}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"tr\ud800ue"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"tr\u0000ue"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","args":["a\u0000b"]}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h\u00001","command":"true"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","env":{"A":"x\u0000y"}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","env":{"A\u0000":"x"}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","run_as":"no\u0000body"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","correlation_id":"a\u0000b"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","stdin":{"content":"!!!","encode":"base64"}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","stdin":{"content":"~~~","encode":"base85"}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","stdout":{"encode":"rot13"}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","deliver_by":"yesterday"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1","command":"true","hosts":["h1"]}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"hosts":[],"command":"true"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"hosts":["[a-"],"command":"true"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: `{"hosts":["h1; DROP TABLE orders"],"command":"true"}`}, 400, invalid},
		// Content types, encodings and headers of a submission.
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Type", "application/json; charset=latin1"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Type", ""}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Type", "multipart/form-data; boundary=x"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Type", "application/json;;"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Encoding", "gzip"}}, 415, media},
		// Two were read as the first.
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Content-Type", "application/json", "Content-Type", "text/plain"}}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{}`, hdr: []string{"Content-Type", "application/json", "Content-Type", "application/json"}}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Idempotency-Key", strings.Repeat("k", 10000)}}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Prefer", "wait=abc"}}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders?wait=-5", body: ok}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders?wait=NaN", body: ok}, 400, invalid},
		// strconv.ParseFloat's own forms, no JSON number: wait=0x1_0p0
		// waited 16 s, +1 one.
		{call{as: "alice", method: "POST", path: "/v1/orders?wait=0x10", body: ok}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders", body: ok, hdr: []string{"Prefer", "wait=0x1_0p0"}}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders?wait=%2B1", body: ok}, 400, invalid},
		// Filters and pages of GET /v1/orders.
		{call{as: "alice", method: "GET", path: "/v1/orders?limit=abc"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?limit=1e2"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?limit=99999999999999999999"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?cursor=abc"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?cursor=" + strings.Repeat("A", 5000)}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?cursor=" + id + "%00"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?cursor=" + id + "'--"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?since=garbage"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?since=9999-99-99T00:00:00Z"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?host=%27%20OR%201%3D1%20--"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?host=.*"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?principal=a%00b"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?status=succeeded,,failed"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?status=.*"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders?batch=nope"}, 400, invalid},
		// Ids, events and cancels.
		{call{as: "alice", method: "GET", path: "/v1/orders/urn:uuid:" + id}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/orders/" + strings.ReplaceAll(id, "-", "")}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/orders/%7B" + id + "%7D"}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/orders/" + strings.Repeat("a", 10000)}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/orders/%00"}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/orders/00000000-0000-0000-0000-000000000000"}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/orders/" + id + "/events", hdr: []string{"Last-Event-ID", "-1"}}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/orders/" + id + "/events", hdr: []string{"Last-Event-ID", "99999999999999999999"}}, 400, invalid},
		// Two were read as the first.
		{call{as: "alice", method: "GET", path: "/v1/orders/" + id + "/events", hdr: []string{"Last-Event-ID", "1", "Last-Event-ID", "2"}}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{"signal":"SIGKILL","signal":"SIGTERM"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{"Signal":"SIGTERM"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{"signal":"9"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{"signal":"sigterm"}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `[]`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{"signal":"SIGTERM"} x`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{}`, hdr: []string{"Content-Type", "text/plain"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `{}`, hdr: []string{"Content-Encoding", "br"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/orders/" + id + "/cancel", body: `null`}, 409, "conflict"},
		// Hosts.
		{call{as: "alice", method: "GET", path: "/v1/hosts/" + strings.Repeat("h", 10000)}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/hosts/a%2Fb"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/hosts/%C3%A9"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/hosts/%00"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/hosts/h1.%3E"}, 400, invalid},
		{call{as: "alice", method: "DELETE", path: "/v1/hosts/offline"}, 403, "forbidden"},
		{call{as: "admin", method: "DELETE", path: "/v1/hosts/bad.host"}, 400, invalid},
		{call{as: "admin", method: "DELETE", path: "/v1/hosts/offline?abandon=yes"}, 400, invalid},
		// Actions.
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":3e0}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":3.5}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":1e400}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":99999999999999999999}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":{"a":1}}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":"3","N":"4"}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":"3\u0000"}}`}, 422, unproc},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":[]}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1","params":{"n":3},"params":{"n":4}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"hosts":["h1"],"params":{"n":3}}`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `null`}, 400, invalid},
		{call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: `{"host":"h1"}`, hdr: []string{"Content-Type", "text/json"}}, 415, media},
		{call{as: "alice", method: "POST", path: "/v1/actions/nope/run", body: `{"host":"h1"}`}, 404, "not_found"},
		{call{as: "alice", method: "GET", path: "/v1/actions/count/choices"}, 400, invalid},
		{call{as: "alice", method: "GET", path: "/v1/actions/count/choices?host=h1.*"}, 400, invalid},
		// Tokens.
		{call{method: "GET", path: "/v1/orders", hdr: []string{"Authorization", "Bearer"}}, 401, "unauthenticated"},
		{call{method: "GET", path: "/v1/orders", hdr: []string{"Authorization", "Basic Zm9vOmJhcg=="}}, 401, "unauthenticated"},
		{call{method: "GET", path: "/v1/orders", hdr: []string{"Authorization", "Bearer " + strings.Repeat("x", 30000)}}, 401, "unauthenticated"},
		{call{method: "GET", path: "/v1/orders", hdr: []string{"Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."}}, 401, "unauthenticated"},
		// A method no route takes.
		{call{as: "alice", method: "OPTIONS", path: "/v1/orders", specMethod: "GET"}, 405, "method_not_allowed"},
		{call{as: "alice", method: "TRACE", path: "/v1/orders/" + id, specMethod: "GET"}, 405, "method_not_allowed"},
	}
	before := countOrders(t, e)
	for _, c := range cases {
		c.c.invalid = true
		resp, b := sc.do(c.c)
		if resp.StatusCode != c.status || !strings.Contains(string(b), `"code":"`+c.code+`"`) {
			body := fmt.Sprint(c.c.body)
			t.Errorf("%s %.100s (%.100s %.100q): %d %s, want %d %s", c.c.method, c.c.path, body, c.c.hdr, resp.StatusCode, b, c.status, c.code)
		}
	}
	if after := countOrders(t, e); after != before {
		t.Errorf("%d orders recorded by refused requests", after-before)
	}
}

// TestSpecNoParameterOperationsRefuseAQuery: a /v1 operation that takes
// no query parameters ignored its query string, so ?outputs=none on GET
// /v1/orders/{id} was dropped without a word (and the outputs sent); now
// each refuses a parameter as the others refuse one they do not take.
func TestSpecNoParameterOperationsRefuseAQuery(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	sc := newSpecChecker(t, e)
	o := e.submit("alice", map[string]any{"host": "offline", "command": "true"}, "", http.StatusAccepted)
	sample := strings.NewReplacer("{id}", o.ID.String(), "{host}", "offline", "{name}", "nosuch")
	tried := 0
	for p, item := range sc.doc.Paths.Map() {
		if !strings.HasPrefix(p, "/v1/") {
			continue
		}
		for method, op := range item.Operations() {
			if slices.ContainsFunc(op.Parameters, func(prm *openapi3.ParameterRef) bool { return prm.Value.In == "query" }) {
				continue
			}
			tried++
			c := call{as: "admin", method: method, path: sample.Replace(p) + "?outputs=none", invalid: true}
			if method != http.MethodGet && method != http.MethodDelete {
				c.body = map[string]any{}
			}
			resp, b := sc.do(c)
			if method == http.MethodHead { // the GET's answer, without its body
				if resp.StatusCode != http.StatusBadRequest || len(b) != 0 {
					t.Errorf("%s %s: %d %q, want 400 without a body", method, c.path, resp.StatusCode, b)
				}
				continue
			}
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"field":"outputs"`) ||
				!strings.Contains(string(b), "this operation takes no query parameters") {
				t.Errorf("%s %s: %d %s, want 400 invalid_request on outputs", method, c.path, resp.StatusCode, b)
			}
		}
	}
	if tried < 10 {
		t.Errorf("%d operations without query parameters, want the dozen there are", tried)
	}
}

// TestSpecWholeNumbersAsJSONSchemaReadsThem: openapi.yaml is OpenAPI 3.1,
// where `type: integer` is any number without a fraction (JSON Schema
// 2020-12): a request the spec takes, max_output_bytes 1.0e3, was refused
// as "must be a whole number written in digits". It is 1000 now.
func TestSpecWholeNumbersAsJSONSchemaReadsThem(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	sc := newSpecChecker(t, e)
	resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"offline","command":"true","max_output_bytes":1.0e3}`})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("max_output_bytes 1.0e3: %d %s", resp.StatusCode, b)
	}
	var sub struct{ ID uuid.UUID }
	if err := json.Unmarshal(b, &sub); err != nil {
		t.Fatal(err)
	}
	o, err := e.store.GetOrder(testenv.Context(t), sub.ID)
	if err != nil || o.MaxOutput != 1000 {
		t.Fatalf("stored max_output_bytes: %v %+v", err, o)
	}
}

// TestPreferFirstWaitCounts: Prefer is read as RFC 7240 says — the first
// wait preference counts and later ones are ignored, a preference's
// parameters after ";" are not its value, and the value may be quoted.
// The last one counted before, so "wait=20, wait=0" did not wait, and
// "wait=20; x=y" was refused.
func TestPreferFirstWaitCounts(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	sc := newSpecChecker(t, e)
	body := map[string]any{"host": "h1", "command": "true"}
	for _, c := range []struct {
		prefer []string
		status int
	}{
		{[]string{"wait=20, wait=0"}, http.StatusOK},
		{[]string{"respond-async, wait=20", "wait=0"}, http.StatusOK},
		{[]string{"wait=20; x=y"}, http.StatusOK},
		{[]string{`wait="20"`}, http.StatusOK},
		{[]string{"wait=abc, wait=20"}, http.StatusBadRequest},
	} {
		req := call{as: "alice", method: "POST", path: "/v1/orders", body: body, invalid: c.status >= 400}
		for _, p := range c.prefer {
			req.hdr = append(req.hdr, "Prefer", p)
		}
		resp, b := sc.do(req)
		if resp.StatusCode != c.status {
			t.Errorf("Prefer %q: %d %s, want %d", c.prefer, resp.StatusCode, b, c.status)
		}
	}
}

// TestSpecWebUIRefusals: the web UI's pages are not an API, but what
// they answer is described: a client the network ACL refuses gets the
// JSON 403 before any page, and a page that does not exist an HTML 404.
// The spec listed neither.
func TestSpecWebUIRefusals(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	openapi3filter.RegisterBodyDecoder("text/html", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(body)
		return string(b), err
	})
	t.Cleanup(func() { openapi3filter.UnregisterBodyDecoder("text/html") })
	deny, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, ACL: deny} },
		func() config.Runbooks { return config.Runbooks{} })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	denied := *e
	denied.url = hs.URL
	for _, c := range []struct {
		sc          *specChecker
		path        string
		status      int
		contentType string
	}{
		{newSpecChecker(t, &denied), "/ui/signin", http.StatusForbidden, "application/json"},
		{newSpecChecker(t, e), "/ui/no-such-page", http.StatusNotFound, "text/html"},
	} {
		resp, b := c.sc.do(call{method: "GET", path: c.path, invalid: true})
		if resp.StatusCode != c.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) {
			t.Errorf("GET %s: %d %s %.200s, want %d %s", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), b, c.status, c.contentType)
		}
	}
}
