package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
)

// TestCorrelationIDHeader: POST /v1/orders and a NATS submission take
// X-Correlation-Id as the order's correlation id when the body names
// none (it was ignored, and the order's correlation_id was ""), the
// body's field wins when both are sent, and the header is held to the
// field's rule (once, printable, at most 200 bytes), refused with 400
// invalid_request naming it. A keyed retry whose header differs (a proxy
// that stamps each request with a new id) is the same request, answered
// with the first order; a retry whose body's field differs is not.
func TestCorrelationIDHeader(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	body := map[string]any{"host": "corr-1", "command": "true"}

	if o := e.submit("alice", body, "", 202, "X-Correlation-Id", "deploy-42"); o.CorrelationID != "deploy-42" {
		t.Errorf("header only: correlation_id %q, want deploy-42", o.CorrelationID)
	}
	withField := map[string]any{"host": "corr-1", "command": "true", "correlation_id": "from-body"}
	if o := e.submit("alice", withField, "", 202, "X-Correlation-Id", "from-header"); o.CorrelationID != "from-body" {
		t.Errorf("body and header: correlation_id %q, want the body's from-body", o.CorrelationID)
	}
	if o := e.submit("alice", body, "", 202, "X-Correlation-Id", ""); o.CorrelationID != "" {
		t.Errorf("empty header: correlation_id %q, want none", o.CorrelationID)
	}
	for _, hdr := range [][]string{
		{"X-Correlation-Id", "a", "X-Correlation-Id", "b"},
		{"X-Correlation-Id", strings.Repeat("x", 201)},
		{"X-Correlation-Id", "tab\there"},
		{"X-Correlation-Id", "latin1-\xe9"},
	} {
		// Refused whether or not the body names its own.
		for _, b := range []map[string]any{body, withField} {
			code, resp := e.do("alice", "POST", "/v1/orders", b, hdr...)
			wantError(t, code, resp, 400, "invalid_request")
			var eb api.ErrorBody
			if err := json.Unmarshal(resp, &eb); err != nil || eb.Error.Details["field"] != "X-Correlation-Id" {
				t.Errorf("%q: %s, want the refusal to name X-Correlation-Id", hdr, resp)
			}
		}
	}

	// A keyed retry is the first order whatever its header says.
	first := e.submit("alice", body, "", 202, "Idempotency-Key", "corr-key", "X-Correlation-Id", "req-1")
	code, resp := e.do("alice", "POST", "/v1/orders", body, "Idempotency-Key", "corr-key", "X-Correlation-Id", "req-2")
	var again api.Order
	if code != 202 || json.Unmarshal(resp, &again) != nil || again.ID != first.ID || again.CorrelationID != "req-1" {
		t.Errorf("retry with another header: %d %s, want 202 with order %s (correlation_id req-1)", code, resp, first.ID)
	}
	code, resp = e.do("alice", "POST", "/v1/orders", body, "Idempotency-Key", "corr-key")
	if code != 202 || json.Unmarshal(resp, &again) != nil || again.ID != first.ID {
		t.Errorf("retry without the header: %d %s, want 202 with order %s", code, resp, first.ID)
	}
	keyed := map[string]any{"host": "corr-1", "command": "true", "correlation_id": "req-1"}
	code, resp = e.do("alice", "POST", "/v1/orders", keyed, "Idempotency-Key", "corr-key")
	wantError(t, code, resp, 422, "idempotency_key_reused")

	// A fan-out gives each of its orders the header's id.
	code, resp = e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"corr-1", "corr-2"}, "command": "true"},
		"X-Correlation-Id", "fan-7", "Idempotency-Key", "corr-fan")
	var batch api.Batch
	if code != 202 || json.Unmarshal(resp, &batch) != nil || len(batch.Orders) != 2 {
		t.Fatalf("fan-out: %d %s", code, resp)
	}
	for _, o := range batch.Orders {
		if o.CorrelationID != "fan-7" {
			t.Errorf("fan-out order on %s: correlation_id %q, want fan-7", o.Host, o.CorrelationID)
		}
	}
	code, resp = e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"corr-1", "corr-2"}, "command": "true"},
		"X-Correlation-Id", "fan-8", "Idempotency-Key", "corr-fan")
	if code != 202 || json.Unmarshal(resp, &batch) != nil || len(batch.Replayed) != 2 {
		t.Errorf("fan-out retry with another header: %d %s, want the two recorded orders", code, resp)
	}

	// NATS: the same header, spelled exactly (NATS header names are
	// case-sensitive).
	nb := map[string]any{"command": "true"}
	if a := e.publish("alice", "corr-n", "", nb, "X-Correlation-Id", "nats-9"); a.Order == nil || a.Order.CorrelationID != "nats-9" {
		t.Errorf("NATS with the header: %+v (error %+v), want correlation_id nats-9", a.Order, a.Error)
	}
	nf := map[string]any{"command": "true", "correlation_id": "from-body"}
	if a := e.publish("alice", "corr-n", "", nf, "X-Correlation-Id", "nats-10"); a.Order == nil || a.Order.CorrelationID != "from-body" {
		t.Errorf("NATS with the field and the header: %+v (error %+v), want the body's from-body", a.Order, a.Error)
	}
	for _, hdr := range [][]string{
		{"X-Correlation-Id", strings.Repeat("x", 201)},
		{"X-Correlation-Id", "a", "X-Correlation-Id", "b"},
		{"x-correlation-id", "nats-11"},
	} {
		a := e.publish("alice", "corr-n", "", nb, hdr...)
		if a.Error == nil || a.Error.Code != "invalid_request" || a.Error.Details["field"] != hdr[0] {
			t.Errorf("NATS %q: %+v (order %+v), want invalid_request naming %s", hdr, a.Error, a.Order, hdr[0])
		}
	}
}

// TestCorrelationIDAnswered: the answers that carry an order echo the
// correlation id it recorded in X-Correlation-Id (none did): a submission
// (the header's, or the body's when both are sent), a keyed retry (the
// first request's, whatever the retry sent), GET and HEAD of the order, a
// fan-out, an action run. An order without one is answered without the
// header, not with its id or a new one.
func TestCorrelationIDAnswered(t *testing.T) {
	count := config.Action{Name: "count", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "n", Type: "int", Min: ptrTo[int64](1), Max: ptrTo[int64](5)}},
		Command: []string{"/bin/echo", "{n}"}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{count}}})
	body := map[string]any{"host": "corr-a", "command": "true"}
	answered := func(what string, wantCode int, wantID string, method, path string, b any, hdr ...string) []byte {
		t.Helper()
		code, h, resp := e.doHeader("alice", method, path, b, hdr...)
		if code != wantCode {
			t.Fatalf("%s: %d %s, want %d", what, code, resp, wantCode)
		}
		if got, ok := h[correlationHeader]; wantID == "" && ok || wantID != "" && (len(got) != 1 || got[0] != wantID) {
			t.Errorf("%s: X-Correlation-Id %q, want %q", what, got, wantID)
		}
		return resp
	}
	order := func(b []byte) api.Order {
		t.Helper()
		var o api.Order
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatalf("decode order: %v: %s", err, b)
		}
		return o
	}

	withHeader := order(answered("the header", 202, "deploy-7", "POST", "/v1/orders", body, "X-Correlation-Id", "deploy-7"))
	answered("the body's field and the header", 202, "from-body", "POST", "/v1/orders",
		map[string]any{"host": "corr-a", "command": "true", "correlation_id": "from-body"}, "X-Correlation-Id", "from-header")
	without := order(answered("neither", 202, "", "POST", "/v1/orders", body))
	answered("GET with one", 200, "deploy-7", "GET", "/v1/orders/"+withHeader.ID.String(), nil)
	answered("HEAD with one", 200, "deploy-7", "HEAD", "/v1/orders/"+withHeader.ID.String(), nil)
	answered("GET without", 200, "", "GET", "/v1/orders/"+without.ID.String(), nil)

	// A keyed retry answers with the first order, and the id it recorded.
	answered("keyed", 202, "first", "POST", "/v1/orders", body, "Idempotency-Key", "corr-echo", "X-Correlation-Id", "first")
	answered("its retry, another header", 202, "first", "POST", "/v1/orders", body, "Idempotency-Key", "corr-echo", "X-Correlation-Id", "second")
	answered("its retry, none", 202, "first", "POST", "/v1/orders", body, "Idempotency-Key", "corr-echo")

	fan := map[string]any{"hosts": []string{"corr-a", "corr-b"}, "command": "true"}
	answered("a fan-out", 202, "fan-1", "POST", "/v1/orders", fan, "X-Correlation-Id", "fan-1")
	answered("a fan-out without", 202, "", "POST", "/v1/orders", fan)

	// An action run reads the header as an order does: the order's
	// correlation id, echoed; a retry with another header is the same run.
	run := map[string]any{"host": "corr-a", "params": map[string]any{"n": 2}}
	o := order(answered("an action run", 202, "act-1", "POST", "/v1/actions/count/run", run, "X-Correlation-Id", "act-1",
		"Idempotency-Key", "corr-act"))
	if o.CorrelationID != "act-1" {
		t.Errorf("action run with X-Correlation-Id act-1: correlation_id %q", o.CorrelationID)
	}
	if again := order(answered("its retry", 202, "act-1", "POST", "/v1/actions/count/run", run, "X-Correlation-Id", "act-2",
		"Idempotency-Key", "corr-act")); again.ID != o.ID {
		t.Errorf("action run retried with another header: order %s, want %s", again.ID, o.ID)
	}
	if o := order(answered("an action run without", 202, "", "POST", "/v1/actions/count/run", run)); o.CorrelationID != "" {
		t.Errorf("action run without the header: correlation_id %q", o.CorrelationID)
	}
	for _, hdr := range [][]string{
		{"X-Correlation-Id", "a", "X-Correlation-Id", "b"},
		{"X-Correlation-Id", strings.Repeat("x", 201)},
		{"X-Correlation-Id", "tab\there"},
	} {
		code, resp := e.do("alice", "POST", "/v1/actions/count/run", run, hdr...)
		wantError(t, code, resp, 400, "invalid_request")
		var eb api.ErrorBody
		if err := json.Unmarshal(resp, &eb); err != nil || eb.Error.Details["field"] != "X-Correlation-Id" {
			t.Errorf("action run %q: %s, want the refusal to name X-Correlation-Id", hdr, resp)
		}
	}
}

// correlationHeader is the header's name as Go's net/http keys it.
const correlationHeader = "X-Correlation-Id"
