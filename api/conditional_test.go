package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// getTagged sends method path as who with If-None-Match inm (none when
// ""), and returns the status, the ETag and the body.
func (e *apiEnv) getTagged(who, method, path, inm string) (int, string, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(testenv.Context(e.t), method, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens[who])
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("ETag"), b
}

// TestConditionalGet: a client polling an order (a batch, a host) sends
// back its ETag in If-None-Match and is answered 304 with no body while
// nothing changed, a 200 with the body and a new tag once something did
// (the status, the result, the output). W/ tags, lists and * are read as
// RFC 9110 §13.1.2 says; a malformed If-None-Match is 400; a missing
// order stays 404; HEAD answers the same.
func TestConditionalGet(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"cg-1"}})

	// A queued order (no worker serves cg-idle), then canceled: the tag
	// changes with its status.
	q := e.submit("alice", map[string]any{"host": "cg-idle", "command": "true"}, "", http.StatusAccepted)
	path := "/v1/orders/" + q.ID.String()
	code, tag, body := e.getTagged("alice", "GET", path, "")
	if code != http.StatusOK || !strings.HasPrefix(tag, `"`) || len(body) == 0 {
		t.Fatalf("GET %s: %d, ETag %q, %d bytes", path, code, tag, len(body))
	}
	for _, inm := range []string{tag, "W/" + tag, "*", `"other", ` + tag, ` , "x"  ,` + tag} {
		for _, method := range []string{"GET", "HEAD"} {
			code, got, body := e.getTagged("alice", method, path, inm)
			if code != http.StatusNotModified || got != tag || len(body) != 0 {
				t.Errorf("%s %s If-None-Match %s: %d, ETag %q, body %q; want 304, %s, none", method, path, inm, code, got, body, tag)
			}
		}
	}
	if code, got, body := e.getTagged("alice", "GET", path, `"other"`); code != http.StatusOK || got != tag || len(body) == 0 {
		t.Errorf("If-None-Match naming another tag: %d, ETag %q, %d bytes; want 200 with the body", code, got, len(body))
	}
	for _, bad := range []string{"nonsense", `"a", *`, ","} {
		code, _, body := e.getTagged("alice", "GET", path, bad)
		wantError(t, code, body, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(string(body), "if_none_match_malformed") {
			t.Errorf("If-None-Match %s: %s, want reason if_none_match_malformed", bad, body)
		}
	}
	if code, _, _ := e.getTagged("bob", "GET", path, "*"); code != http.StatusNotFound {
		t.Errorf("another principal's order with If-None-Match *: %d, want 404", code)
	}
	if code, _ := e.do("alice", "POST", path+"/cancel", nil); code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("cancel: %d", code)
	}
	code, canceled, body := e.getTagged("alice", "GET", path, tag)
	if code != http.StatusOK || canceled == tag || !strings.Contains(string(body), `"canceled"`) {
		t.Errorf("after the cancel, If-None-Match of the queued order: %d, ETag %q (was %q), %s; want 200 with a new tag", code, canceled, tag, body)
	}

	// A finished order whose output a lean read leaves in the database
	// (over 64 KiB): same tag on every read, 304 without the output, and
	// not the tag of another order with other output of the same size.
	big := e.submit("alice", map[string]any{"host": "cg-1", "command": "seq", "args": []string{"1", "30000"}}, "?wait=20", http.StatusOK)
	bigPath := "/v1/orders/" + big.ID.String()
	code, bigTag, body := e.getTagged("alice", "GET", bigPath, "")
	if code != http.StatusOK || len(body) < 64<<10 {
		t.Fatalf("GET %s: %d, %d bytes", bigPath, code, len(body))
	}
	if code, again, body := e.getTagged("alice", "GET", bigPath, ""); code != http.StatusOK || again != bigTag || len(body) < 64<<10 {
		t.Errorf("second GET of a finished order: %d, ETag %q, want %q", code, again, bigTag)
	}
	if code, _, body := e.getTagged("alice", "GET", bigPath, bigTag); code != http.StatusNotModified || len(body) != 0 {
		t.Errorf("If-None-Match of a finished order: %d, %d bytes; want 304, none", code, len(body))
	}
	// A running order, then finished: the tag changes with the status
	// and the output.
	run := e.submit("alice", map[string]any{"host": "cg-1", "command": "sh", "args": []string{"-c", "echo started; sleep 1; echo done"}}, "", http.StatusAccepted)
	runPath := "/v1/orders/" + run.ID.String()
	seen := map[string]string{}
	var last string
	for _, want := range []string{"running", "succeeded"} {
		e.waitOrder(run.ID, want)
		code, got, body := e.getTagged("alice", "GET", runPath, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d", runPath, code)
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("the %s order has the tag it had %s: %s", want, prev, body)
		}
		seen[got], last = want, got
	}
	if code, _, body := e.getTagged("alice", "GET", runPath, last); code != http.StatusNotModified || len(body) != 0 {
		t.Errorf("If-None-Match of the succeeded order: %d, %d bytes", code, len(body))
	}

	// A batch and a host answer tags too.
	code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"cg-idle", "cg-idle2"}, "command": "true"})
	if code != http.StatusAccepted {
		t.Fatalf("fan-out: %d %s", code, b)
	}
	batch := string(b)[strings.Index(string(b), `"batch_id":"`)+len(`"batch_id":"`):]
	batch = batch[:36]
	for _, p := range []string{"/v1/batches/" + batch, "/v1/batches/" + batch + "?outputs=none", "/v1/hosts/cg-idle"} {
		code, tag, _ := e.getTagged("alice", "GET", p, "")
		if code != http.StatusOK || tag == "" {
			t.Errorf("GET %s: %d, ETag %q", p, code, tag)
			continue
		}
		if code, _, body := e.getTagged("alice", "GET", p, tag); code != http.StatusNotModified || len(body) != 0 {
			t.Errorf("GET %s If-None-Match %s: %d, %d bytes; want 304", p, tag, code, len(body))
		}
	}
	_, noneTag, _ := e.getTagged("alice", "GET", "/v1/batches/"+batch+"?outputs=none", "")
	if code, _, _ := e.getTagged("alice", "GET", "/v1/batches/"+batch, noneTag); code != http.StatusOK {
		t.Errorf("a batch with outputs answered 304 to the tag of its answer without: %d", code)
	}
}

// readCounter is the real store, counting the reads of one order and of
// cancel requests.
type readCounter struct {
	api.Store
	orders, cancels *atomic.Int64
}

func (c readCounter) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	c.orders.Add(1)
	return c.Store.GetOrder(ctx, id)
}

func (c readCounter) GetOrderLean(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	c.orders.Add(1)
	return c.Store.GetOrderLean(ctx, id)
}

func (c readCounter) GetOrderLeanWithCancel(ctx context.Context, id uuid.UUID) (*order.Order, *postgres.CancelRequest, error) {
	c.orders.Add(1)
	return c.Store.GetOrderLeanWithCancel(ctx, id)
}

func (c readCounter) CancelRequestOf(ctx context.Context, id uuid.UUID) (*postgres.CancelRequest, error) {
	c.cancels.Add(1)
	return c.Store.CancelRequestOf(ctx, id)
}

// TestGetOrderIsOneRead: a poll of GET /v1/orders/{id} reads PostgreSQL
// once, the order and its cancel request in one statement, and still
// shows who asked to cancel it (a running order's GET read the order,
// then its cancel request).
func TestGetOrderIsOneRead(t *testing.T) {
	var orders, cancels atomic.Int64
	e := newAPIEnv(t, envOptions{hosts: []string{"one-1"},
		store: func(s api.Store) api.Store { return readCounter{Store: s, orders: &orders, cancels: &cancels} }})
	// A running order that ignores SIGTERM: canceled with it, it runs on
	// with its cancel request.
	o := e.submit("alice", map[string]any{"host": "one-1", "command": "sh", "args": []string{"-c", "trap '' TERM; sleep 30"}}, "", http.StatusAccepted)
	e.waitOrder(o.ID, "running")
	if code, b := e.do("alice", "POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{"signal": "SIGTERM"}); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, b)
	}
	defer e.do("alice", "POST", "/v1/orders/"+o.ID.String()+"/cancel", map[string]any{"signal": "SIGKILL"})
	orders.Store(0)
	cancels.Store(0)
	code, tag, b := e.getTagged("alice", "GET", "/v1/orders/"+o.ID.String(), "")
	var got api.Order
	if code != http.StatusOK || json.Unmarshal(b, &got) != nil || got.Status != "running" || got.Cancel == nil ||
		got.Cancel.Actor != "alice" || got.Cancel.Signal != "SIGTERM" {
		t.Fatalf("GET of the running order with a cancel request: %d %s", code, b)
	}
	if n, c := orders.Load(), cancels.Load(); n != 1 || c != 0 {
		t.Errorf("GET of a running order: %d reads of the order and %d of its cancel request, want one statement", n, c)
	}
	if code, _, _ := e.getTagged("alice", "GET", "/v1/orders/"+o.ID.String(), tag); code != http.StatusNotModified {
		t.Errorf("If-None-Match of the running order: %d, want 304", code)
	}
	// A queued order has no cancel request: none shown.
	q := e.submit("alice", map[string]any{"host": "one-idle", "command": "true"}, "", http.StatusAccepted)
	if code, _, b := e.getTagged("alice", "GET", "/v1/orders/"+q.ID.String(), ""); code != http.StatusOK || strings.Contains(string(b), `"cancel"`) {
		t.Errorf("GET of a queued order: %d %s", code, b)
	}
}
