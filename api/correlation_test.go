package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/api"
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
