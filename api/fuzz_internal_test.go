package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
)

// submitSeeds are submissions of every field's edge, beside quickBodies.
var submitSeeds = []string{
	`{"host":"web-1","command":"/usr/bin/systemctl","args":["restart","nginx"],"timeout_seconds":30,"run_as":"root"}`,
	`{"host":"h","command":"ls","env":{"LANG":"C.UTF-8"},"stdin":{"content":"aGk=","encode":"base64"},"stdout":{"capture":true,"encode":"base64"}}`,
	`{"host":"h","command":"ls","stdin":{"content":"41","encode":"hex"}}`,
	`{"host":"h","command":"ls","timeout_seconds":1e-12}`,
	`{"host":"h","command":"ls","timeout_seconds":10000001}`,
	`{"host":"h","command":"ls","args":["\u2028","\ud800"]}`,
	`{"host":"h","command":"ls","env":{"A=B":"1"}}`,
	`{"kind":"script","host":"h","command":"ls"}`,
	`{"host":"","hosts":["web-*","db-[12]"],"command":"ls"}`,
	`{"host":"h","command":"ls","deliver_by":"2030-01-31T15:04:05.999999999+14:00","expires_in_seconds":5}`,
}

// FuzzSubmitRequest runs a body, an Idempotency-Key and an
// X-Correlation-Id through what POST /v1/orders checks before anything is
// stored (decodeBytes, toOrder, the two headers) and then the intake's
// order.Validate. Every refusal is an *order.Error whose code is a 4xx
// (never the 500 writeError gives anything else); every accepted request,
// encoded again and decoded, is the same order and is accepted again.
func FuzzSubmitRequest(f *testing.F) {
	for _, b := range quickBodies {
		f.Add([]byte(b), "", "")
	}
	for _, b := range submitSeeds {
		f.Add([]byte(b), "key-1", "corr-1")
	}
	f.Add([]byte(`{"host":"h","command":"ls"}`), "k\x00", "c\n")
	f.Fuzz(func(t *testing.T, body []byte, key, corr string) {
		o, err := submitChecks(body, key, corr)
		if err != nil {
			refusedAs4xx(t, body, err)
			return
		}
		if !order.ValidHost(o.Host) && o.Host != "" {
			t.Fatalf("accepted host %q that ValidHost refuses (body %q)", o.Host, body)
		}
		if order.HasControl(o.IdempotencyKey, false) || order.HasControl(o.CorrelationID, false) {
			t.Fatalf("accepted a control character in a key or correlation id (body %q)", body)
		}
		if o.Host != "" {
			// A single order, through order.Validate: what reaches the
			// bus and the worker.
			if o.Command == "" || order.HasControl(o.Command, false) {
				t.Fatalf("accepted command %q (body %q)", o.Command, body)
			}
			for _, a := range o.Args {
				if order.HasControl(a, true) {
					t.Fatalf("accepted argument %q (body %q)", a, body)
				}
			}
			for k, v := range o.Env {
				if !order.ValidEnvName(k) || order.HasControl(v, true) {
					t.Fatalf("accepted env %q=%q (body %q)", k, v, body)
				}
			}
			if o.Timeout < 0 || o.RunAs != "" && !order.ValidUser(o.RunAs) {
				t.Fatalf("accepted timeout %s, run_as %q (body %q)", o.Timeout, o.RunAs, body)
			}
		}
		var req SubmitRequest
		if err := decodeBytes(body, &req); err != nil {
			t.Fatal(err)
		}
		again, err := json.Marshal(&req)
		if err != nil {
			t.Fatalf("encode accepted %q: %v", body, err)
		}
		o2, err := submitChecks(again, key, corr)
		if err != nil {
			t.Fatalf("accepted %q, its encoding %q refused: %v", body, again, err)
		}
		if !reflect.DeepEqual(o, o2) {
			t.Fatalf("accepted %q and its encoding %q decode to different orders:\n%+v\n%+v", body, again, o, o2)
		}
	})
}

// submitChecks is handleSubmit's checks of one order and the intake's
// order.Validate, in their order.
func submitChecks(body []byte, key, corr string) (*order.Order, error) {
	var req SubmitRequest
	if err := decodeBytes(body, &req); err != nil {
		return nil, err
	}
	o, err := req.toOrder()
	if err != nil {
		return nil, err
	}
	r := &http.Request{Header: http.Header{}}
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	if o.IdempotencyKey, err = idempotencyKeyOf(r); err != nil {
		return nil, err
	}
	var values []string
	if corr != "" {
		values = []string{corr}
	}
	c, err := correlationOf(values)
	if err != nil {
		return nil, err
	}
	if req.Hosts != nil && len(req.Hosts) == 0 && o.Host == "" {
		return nil, order.FieldError(order.CodeInvalid, "hosts", "hosts is empty")
	}
	correlate(o, c)
	if len(req.Hosts) > 0 {
		return o, nil // each host's order is validated by the fan-out
	}
	if err := order.Validate(o, order.DefaultLimits()); err != nil {
		return nil, err
	}
	return o, nil
}

// refusedAs4xx fails t unless err is answered with a 4xx and a stable code.
func refusedAs4xx(t *testing.T, in any, err error) {
	t.Helper()
	var e *order.Error
	if !errors.As(err, &e) {
		t.Fatalf("%q refused with %T %v, which writeError answers 500", in, err, err)
	}
	if st := statusOf(e.Code); st < 400 || st > 499 || e.Code == "" {
		t.Fatalf("%q refused with code %q (status %d), want a 4xx: %v", in, e.Code, st, err)
	}
}

// FuzzEventEnd gives eventEnd, which reads the events the waiters get
// from the bus, a message body: whenever its quick reading (plainEvent)
// takes the body, it says what encoding/json says of it (an error or
// not; the same order id; the same status, "" for one that is none of
// order.Statuses, which the waiters treat alike).
func FuzzEventEnd(f *testing.F) {
	for _, b := range []string{
		`{"order_id":"0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b","type":"finished","status":"succeeded","host":"web-1"}`,
		`{"order_id":"0b7e4f8a3c1d4e2f9a6b5d8c7e1f2a3b","status":"failed"}`,
		`{"order_id":"urn:uuid:0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b","status":"canceled","status":"nope"}`,
		`{"order_id":"{0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b}","status":"running"}`,
		`{"order_id":"x","order_id":"0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b","status":"succeeded"}`,
		`{"ORDER_ID":"0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b","Status":"succeeded"}`,
		`{"order_id":"0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b","status":"succ\u0065eded"}`,
		`{"order_id":"0b7e4f8a-3c1d-4e2f-9a6b-5d8c7e1f2a3b","status":1}`,
		`{}`, ` { } `, `{"type":"started"}`, `[]`, `null`, ``, `{"order_id":"",}`, `{"status":"failed"} x`,
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, status, err := eventEnd(b)
		var ev struct {
			OrderID uuid.UUID `json:"order_id"`
			Status  string    `json:"status"`
		}
		jerr := json.Unmarshal(b, &ev)
		if (err == nil) != (jerr == nil) {
			t.Fatalf("%q: eventEnd says %v, encoding/json %v", b, err, jerr)
		}
		if err != nil {
			return
		}
		want := order.Status("")
		if slices.Contains(order.Statuses, order.Status(ev.Status)) {
			want = order.Status(ev.Status)
		}
		got := status
		if !slices.Contains(order.Statuses, got) {
			got = ""
		}
		if id != ev.OrderID || got != want {
			t.Fatalf("%q: eventEnd reads %s %q, encoding/json %s %q", b, id, status, ev.OrderID, ev.Status)
		}
	})
}

// SubmitCorpus is FuzzSubmitRequest's seeds and the inputs kept under
// testdata/fuzz/FuzzSubmitRequest, each a body, an Idempotency-Key and an
// X-Correlation-Id, for TestSubmitCorpusThroughTheRouter.
func SubmitCorpus(t *testing.T) [][3]string {
	var out [][3]string
	for _, b := range quickBodies {
		out = append(out, [3]string{b, "", ""})
	}
	for _, b := range submitSeeds {
		out = append(out, [3]string{b, "key-1", "corr-1"})
	}
	out = append(out, [3]string{`{"host":"h","command":"ls"}`, "k\x00", "c\n"})
	kept, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzSubmitRequest", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range kept {
		vals := corpusValues(t, file)
		if len(vals) != 3 {
			t.Fatalf("%s holds %d values, want 3", file, len(vals))
		}
		out = append(out, [3]string{vals[0], vals[1], vals[2]})
	}
	return out
}

// corpusValues reads a file of the fuzzer's corpus format ("go test fuzz
// v1", then one Go literal a line: []byte("…") or "…").
func corpusValues(t *testing.T, file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var out []string
	for _, l := range lines[1:] {
		l = strings.TrimSuffix(strings.TrimPrefix(l, "[]byte("), ")")
		v, err := strconv.Unquote(l)
		if err != nil {
			t.Fatalf("%s: %q: %v", file, l, err)
		}
		out = append(out, v)
	}
	return out
}

// SubmitChecks is submitChecks and the status its refusal is answered
// with (0 when it accepts).
func SubmitChecks(body []byte, key, corr string) (int, order.Code) {
	if _, err := submitChecks(body, key, corr); err != nil {
		code := order.ErrorCode(err)
		return statusOf(code), code
	}
	return 0, ""
}
