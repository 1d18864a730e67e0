package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/testenv"
)

// specChecker sends requests to a real API and validates each request it
// sends (when it is meant to be valid) and every response against the
// spec. Its schemas are closed first: a field the server sends that the
// spec does not describe fails the test, even though the published spec
// leaves objects open for clients.
type specChecker struct {
	t      *testing.T
	e      *apiEnv
	doc    *openapi3.T
	router routers.Router
	// events validates the body of a text/event-stream answer.
	events func(c call, body []byte)
}

// newSpecChecker checks the native routes.
func newSpecChecker(t *testing.T, e *apiEnv) *specChecker {
	t.Helper()
	return newSurfaceChecker(t, e, "")
}

// newSurfaceChecker checks the routes of one compat surface (the value of
// x-orderly-compat), or with "" the native routes: the spec's other paths
// are left out, so a request reaches only the operations of what is
// tested.
func newSurfaceChecker(t *testing.T, e *apiEnv, surface string) *specChecker {
	t.Helper()
	doc := loadSpec(t)
	for p, item := range doc.Paths.Map() {
		if s, _ := item.Extensions[compatSurface].(string); s != surface {
			doc.Paths.Delete(p)
		}
	}
	if doc.Paths.Len() == 0 {
		t.Fatalf("openapi.yaml has no paths of the surface %q", surface)
	}
	doc.Servers = openapi3.Servers{{URL: e.url}}
	// The parts of an allOf stay open: each may only know its own fields.
	seen := map[*openapi3.Schema]bool{}
	for _, s := range doc.Components.Schemas {
		for _, part := range s.Value.AllOf {
			seen[part.Value] = true
		}
	}
	for _, s := range doc.Components.Schemas {
		closeSchema(s, seen)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	sc := &specChecker{t: t, e: e, doc: doc, router: router}
	sc.events = sc.checkEvents
	return sc
}

// closeSchema forbids properties a schema does not list, in it and every
// schema under it, unless it says otherwise.
func closeSchema(ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
		no := false
		s.AdditionalProperties.Has = &no
	}
	for _, p := range s.Properties {
		closeSchema(p, seen)
	}
	for _, l := range [][]*openapi3.SchemaRef{s.OneOf, s.AnyOf} {
		for _, sub := range l {
			closeSchema(sub, seen)
		}
	}
	closeSchema(s.Items, seen)
	closeSchema(s.AdditionalProperties.Schema, seen)
}

// call is one request of the suite.
type call struct {
	as     string // principal; "" sends no token
	method string
	path   string
	body   any      // JSON-encoded unless a string (sent as is)
	hdr    []string // name, value, …; a name given twice is sent twice
	// invalid marks a request the spec itself refuses (the server must
	// too); only its response is validated.
	invalid bool
	// specMethod, for a method the path does not serve (invalid), is the
	// method of the operation whose responses describe the refusal.
	specMethod string
}

// do sends c, validates it and its response, and returns the response
// and its body.
func (sc *specChecker) do(c call) (*http.Response, []byte) {
	sc.t.Helper()
	var body []byte
	switch b := c.body.(type) {
	case nil:
	case string:
		body = []byte(b)
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			sc.t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(testenv.Context(sc.t), c.method, sc.e.url+c.path, bytes.NewReader(body))
	if err != nil {
		sc.t.Fatal(err)
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.as != "" {
		req.Header.Set("Authorization", "Bearer "+sc.e.tokens[c.as])
	}
	named := map[string]bool{} // a name given twice is sent twice
	for i := 0; i+1 < len(c.hdr); i += 2 {
		if named[c.hdr[i]] {
			req.Header.Add(c.hdr[i], c.hdr[i+1])
		} else {
			req.Header.Set(c.hdr[i], c.hdr[i+1])
		}
		named[c.hdr[i]] = true
	}
	find := req
	if c.specMethod != "" {
		find = req.Clone(req.Context())
		find.Method = c.specMethod
	}
	route, params, err := sc.router.FindRoute(find)
	if err != nil {
		sc.t.Fatalf("%s %s: not in the spec: %v", c.method, c.path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if !c.invalid {
		if err := openapi3filter.ValidateRequest(testenv.Context(sc.t), in); err != nil {
			sc.t.Errorf("%s %s: the request does not match the spec: %v", c.method, c.path, err)
		}
		req.Body = http.NoBody
		if len(body) > 0 {
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		sc.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		sc.t.Fatal(err)
	}
	sse := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: sse}}
	out.SetBodyBytes(b)
	if err := openapi3filter.ValidateResponse(testenv.Context(sc.t), out); err != nil {
		sc.t.Errorf("%s %s: the %d response does not match the spec: %v\n%s", c.method, c.path, resp.StatusCode, err, b)
	}
	// ValidateResponse checks the headers the spec declares, not that it
	// declares the ones the API answers: orderly's own must be listed.
	for _, h := range []string{"X-Correlation-Id", "Idempotent-Replayed"} {
		if doc := route.Operation.Responses.Status(resp.StatusCode); resp.Header.Get(h) != "" && (doc == nil || doc.Value.Headers[h] == nil) {
			sc.t.Errorf("%s %s: the %d response's header %s is not in the spec", c.method, c.path, resp.StatusCode, h)
		}
	}
	// ValidateResponse passes any body for a status the spec gives no
	// content, and skips the content type of a stream: a body must be of
	// a type the spec lists for its status.
	if doc := route.Operation.Responses.Status(resp.StatusCode); doc != nil && len(b) > 0 &&
		doc.Value.Content.Get(resp.Header.Get("Content-Type")) == nil {
		sc.t.Errorf("%s %s: the %d response's content type %q is not in the spec\n%s", c.method, c.path, resp.StatusCode,
			resp.Header.Get("Content-Type"), b)
	}
	if sse {
		sc.events(c, b)
	}
	return resp, b
}

// checkEvents validates an SSE body's event data against the schemas the
// spec names for them.
func (sc *specChecker) checkEvents(c call, body []byte) {
	sc.t.Helper()
	schemaOf := map[string]string{"stdout": "Chunk", "stderr": "Chunk", "finished": "Order"}
	var event string
	sc2 := bufio.NewScanner(bytes.NewReader(body))
	sc2.Buffer(nil, 1<<20)
	names := []string{}
	for sc2.Scan() {
		line := sc2.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
			names = append(names, event)
		case strings.HasPrefix(line, "data: "):
			var v any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v); err != nil {
				sc.t.Errorf("%s: %s event data is not JSON: %v", c.path, event, err)
				continue
			}
			if name, ok := schemaOf[event]; ok {
				s := sc.doc.Components.Schemas[name].Value
				if err := s.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
					sc.t.Errorf("%s: %s event does not match %s: %v", c.path, event, name, err)
				}
			}
		}
	}
	if len(names) == 0 || names[len(names)-1] != "finished" {
		sc.t.Errorf("%s: events %v do not end with finished", c.path, names)
	}
}

// rejections counts the rejections rows of source with code.
func rejections(t *testing.T, e *apiEnv, source, code string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM rejections WHERE source = $1 AND code = $2`,
		source, code).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// decodeAs decodes a response body.
func decodeAs[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T: %v: %s", v, err, b)
	}
	return v
}

// TestSpecResponses drives the API (submit, wait, fan-out, get, list,
// events, cancel, hosts, batches, status and the refusals) and validates
// every request and response against openapi.yaml.
func TestSpecResponses(t *testing.T) {
	count := config.Action{Name: "count", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "n", Type: "int", Min: ptrTo[int64](1), Max: ptrTo[int64](5)}},
		Command: []string{"/bin/echo", "{n}"}}
	acts := config.Actions{Bus: "system", Definitions: []config.Action{count, hashAction}}
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, actions: acts, workerActions: acts})
	sc := newSpecChecker(t, e)

	// The closed schemas do catch a field the spec does not describe.
	extra := map[string]any{"id": "0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c", "undocumented": 1}
	if err := sc.doc.Components.Schemas["Order"].Value.VisitJSON(extra, openapi3.EnableJSONSchema2020()); err == nil {
		t.Fatal("an order with an undocumented field passes the closed Order schema")
	}

	want := func(resp *http.Response, b []byte, status int) {
		t.Helper()
		if resp.StatusCode != status {
			t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
		}
	}
	sc.do(call{method: "GET", path: "/healthz"})
	sc.do(call{method: "GET", path: "/readyz"})
	resp, b := sc.do(call{as: "admin", method: "GET", path: "/v1/status"})
	want(resp, b, http.StatusOK)

	// Submit and wait: the finished order, with encoded output and stdin.
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders?wait=20", body: map[string]any{
		"host": "h1", "command": "sh", "args": []string{"-c", "cat; echo err >&2"},
		"stdin": map[string]any{"content": "aGVsbG8K", "encode": "base64"}, "env": map[string]string{"A": "1"},
		"stdout": map[string]any{"capture": true, "encode": "base85"}, "timeout_seconds": 10, "correlation_id": "c1"}})
	want(resp, b, http.StatusOK)
	done := decodeAs[api.Order](t, b)
	if h := resp.Header.Get("X-Correlation-Id"); h != "c1" {
		t.Errorf("submit with correlation_id c1: X-Correlation-Id %q", h)
	}
	for _, m := range []string{"GET", "HEAD"} {
		if resp, _ = sc.do(call{as: "alice", method: m, path: "/v1/orders/" + done.ID.String()}); resp.Header.Get("X-Correlation-Id") != "c1" {
			t.Errorf("%s of an order with correlation id c1: X-Correlation-Id %q", m, resp.Header.Get("X-Correlation-Id"))
		}
	}
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "h1", "command": "echo", "args": []string{"hi"}},
		hdr: []string{"Prefer", "wait=20", "Idempotency-Key", "k-1"}})
	want(resp, b, http.StatusOK)
	sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "h1", "command": "echo", "args": []string{"other"}},
		hdr: []string{"Idempotency-Key", "k-1"}}) // 422 idempotency_key_reused

	// Queued (no worker for "offline"), then canceled.
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "offline", "command": "true", "expires_in_seconds": 600}})
	want(resp, b, http.StatusAccepted)
	queued := decodeAs[api.Order](t, b)
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders/" + queued.ID.String() + "/cancel", body: map[string]any{"signal": "SIGINT"}})
	want(resp, b, http.StatusOK)
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders/" + done.ID.String() + "/cancel"})
	want(resp, b, http.StatusConflict)

	// A running order signalled, then followed to its end.
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "h1", "command": "sleep", "args": []string{"30"}}})
	want(resp, b, http.StatusAccepted)
	running := decodeAs[api.Order](t, b)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, b = sc.do(call{as: "alice", method: "GET", path: "/v1/orders/" + running.ID.String()})
		if decodeAs[api.Order](t, b).Status == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order never ran: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sc.do(call{as: "admin", method: "GET", path: "/v1/hosts/h1"})
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders/" + running.ID.String() + "/cancel", body: map[string]any{"signal": "SIGKILL"}})
	want(resp, b, http.StatusAccepted)
	sc.do(call{as: "alice", method: "GET", path: "/v1/orders/" + running.ID.String() + "/events"})
	sc.do(call{as: "alice", method: "GET", path: "/v1/orders/" + done.ID.String() + "/events"})
	sc.do(call{as: "alice", method: "GET", path: "/v1/orders/" + done.ID.String() + "/events", hdr: []string{"Last-Event-ID", "1"}})

	// Fan-out: one host with a worker, one without; then the batch.
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"hosts": []string{"h1", "offline"}, "command": "true"},
		hdr: []string{"X-Correlation-Id", "fan-c1"}})
	want(resp, b, http.StatusAccepted)
	batch := decodeAs[api.Batch](t, b)
	if h := resp.Header.Get("X-Correlation-Id"); h != "fan-c1" {
		t.Errorf("fan-out with X-Correlation-Id fan-c1: answered %q", h)
	}
	sc.do(call{as: "alice", method: "GET", path: "/v1/batches/" + batch.BatchID.String()})
	sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"hosts": []string{"zz-*"}, "command": "true"}}) // 422

	// Reads.
	resp, b = sc.do(call{as: "alice", method: "GET", path: "/v1/orders?limit=1&status=succeeded,failed&host=h1&since=2000-01-01T00:00:00Z"})
	want(resp, b, http.StatusOK)
	page := decodeAs[api.OrderList](t, b)
	if page.NextCursor == nil {
		t.Fatalf("no next_cursor: %s", b)
	}
	sc.do(call{as: "alice", method: "GET", path: "/v1/orders?cursor=" + *page.NextCursor})
	sc.do(call{as: "admin", method: "GET", path: "/v1/orders?principal=alice&batch=" + batch.BatchID.String()})
	// Without outputs: the streams have no content, which the spec allows.
	resp, b = sc.do(call{as: "alice", method: "GET", path: "/v1/orders?limit=20&outputs=none"})
	want(resp, b, http.StatusOK)
	if !strings.Contains(string(b), `"stdout":{"encode":"base85","bytes":6,`) || strings.Contains(string(b), `"content"`) {
		t.Errorf("GET /v1/orders?outputs=none: %s", b)
	}
	resp, b = sc.do(call{as: "alice", method: "GET", path: "/v1/batches/" + batch.BatchID.String() + "?outputs=none"})
	want(resp, b, http.StatusOK)
	sc.do(call{as: "admin", method: "GET", path: "/v1/hosts"})
	sc.do(call{as: "admin", method: "GET", path: "/v1/hosts/offline"})
	// A host in maintenance: its state, the refusal of its new orders,
	// and out again.
	resp, b = sc.do(call{as: "admin", method: "POST", path: "/v1/hosts/offline/maintenance", body: map[string]any{"reason": "disk swap"}})
	want(resp, b, http.StatusOK)
	sc.do(call{as: "admin", method: "GET", path: "/v1/hosts/offline"})
	sc.do(call{as: "admin", method: "GET", path: "/v1/hosts"})
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "offline", "command": "true"}})
	want(resp, b, http.StatusConflict)
	sc.do(call{as: "alice", method: "POST", path: "/v1/hosts/offline/maintenance"}) // 403
	resp, b = sc.do(call{as: "admin", method: "DELETE", path: "/v1/hosts/offline/maintenance"})
	want(resp, b, http.StatusOK)

	// Actions: the list, one, its choices, a run waited for, refusals.
	sc.do(call{as: "alice", method: "GET", path: "/v1/actions"})
	sc.do(call{as: "alice", method: "GET", path: "/v1/actions/count"})
	sc.do(call{as: "alice", method: "GET", path: "/v1/actions/count/choices?host=h1"})
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: map[string]any{"host": "h1", "params": map[string]any{"n": 3}},
		hdr: []string{"Prefer", "wait=20", "X-Correlation-Id", "act-c1"}})
	want(resp, b, http.StatusOK)
	if o := decodeAs[api.Order](t, b); o.Action == nil || o.Action.Params["n"] != "3" || o.CorrelationID != "act-c1" ||
		resp.Header.Get("X-Correlation-Id") != "act-c1" {
		t.Fatalf("action run with X-Correlation-Id act-c1: %q %s", resp.Header.Get("X-Correlation-Id"), b)
	}
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/actions/hash-secret/run", body: map[string]any{"host": "act-1", "params": map[string]any{"label": "x", "pw": "s3cretpassw0rd"}}})
	want(resp, b, http.StatusAccepted) // no worker for act-1: queued
	if !strings.Contains(string(b), `"secret_params":["pw"]`) || strings.Contains(string(b), "s3cret") {
		t.Errorf("a secret param: %s", b)
	}
	for _, c := range []call{
		{as: "alice", method: "POST", path: "/v1/actions/count/run", body: map[string]any{"host": "h1", "params": map[string]any{"n": 9}}}, // 422
		{as: "alice", method: "GET", path: "/v1/actions/nope"},                                                                             // 404
		{as: "alice", method: "GET", path: "/v1/actions/count/choices?host=bad.host", invalid: true},                                       // 400
	} {
		if resp, b := sc.do(c); resp.StatusCode < 400 {
			t.Errorf("%s %s: %d, want a refusal: %s", c.method, c.path, resp.StatusCode, b)
		}
	}

	// A method a path does not take: 405 in the envelope, with Allow, on
	// every native path (the web UI's pages are HTML and not an API).
	sample := strings.NewReplacer("{id}", done.ID.String(), "{host}", "h1", "{name}", "count", "{file}", "index.html")
	for p, item := range sc.doc.Paths.Map() {
		if p == "/ui/{page}" || p == "/metrics" { // this API serves no metrics
			continue
		}
		method := http.MethodGet
		if item.Get == nil {
			for m := range item.Operations() {
				method = m
			}
		}
		resp, b := sc.do(call{as: "admin", method: http.MethodPut, path: sample.Replace(p), invalid: true, specMethod: method})
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
			t.Errorf("PUT %s: %d (Allow %q), want 405 with Allow: %s", p, resp.StatusCode, resp.Header.Get("Allow"), b)
		}
	}

	// Refusals, each in the error envelope with its stable code.
	for _, c := range []call{
		{method: "GET", path: "/v1/orders"},                                                                                                                                  // 401
		{as: "bob", method: "GET", path: "/v1/orders/" + done.ID.String()},                                                                                                   // 404: not bob's
		{as: "bob", method: "POST", path: "/v1/orders/" + queued.ID.String() + "/cancel"},                                                                                    // 403
		{as: "alice", method: "GET", path: "/v1/orders/not-a-uuid"},                                                                                                          // 404
		{as: "alice", method: "GET", path: "/v1/batches/not-a-uuid"},                                                                                                         // 404
		{as: "alice", method: "GET", path: "/v1/hosts/nosuch"},                                                                                                               // 404
		{as: "alice", method: "GET", path: "/v1/orders?status=bogus", invalid: true},                                                                                         // 400
		{as: "alice", method: "GET", path: "/v1/orders?limit=0", invalid: true},                                                                                              // 400
		{as: "alice", method: "GET", path: "/v1/orders?outputs=bogus", invalid: true},                                                                                        // 400
		{as: "alice", method: "GET", path: "/v1/batches/" + batch.BatchID.String() + "?outputs=bogus", invalid: true},                                                        // 400
		{as: "alice", method: "GET", path: "/v1/hosts/bad.name", invalid: true},                                                                                              // 400
		{as: "alice", method: "POST", path: "/v1/orders", body: `{"host":"h1"`, invalid: true},                                                                               // 400
		{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "h1", "command": "true", "Command": "x"}, invalid: true},                              // 400
		{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "h1", "command": "true"}, hdr: []string{"Content-Type", "text/plain"}, invalid: true}, // 415
		{as: "alice", method: "POST", path: "/v1/orders", body: map[string]any{"host": "h1", "command": strings.Repeat("x", 2<<20)}, invalid: true},                          // 413
		{as: "alice", method: "POST", path: "/v1/orders?wait=soon", body: map[string]any{"host": "h1", "command": "true"}, invalid: true},                                    // 400
		{as: "alice", method: "POST", path: "/v1/orders/" + done.ID.String() + "/cancel", body: map[string]any{"signal": "SIGWINCH"}, invalid: true},                         // 400
		{as: "alice", method: "GET", path: "/v1/orders/" + done.ID.String() + "/events", hdr: []string{"Last-Event-ID", "x"}, invalid: true},                                 // 400
		{as: "alice", method: "POST", path: "/v1/admin/reload"},                                                                                                              // 403: not an admin
		{as: "admin", method: "POST", path: "/v1/admin/reload"},                                                                                                              // 503: this server cannot reload
	} {
		resp, b := sc.do(c)
		if resp.StatusCode < 400 {
			t.Errorf("%s %s: %d, want a refusal: %s", c.method, c.path, resp.StatusCode, b)
		}
	}
}

// TestSpecRefusesWhatSubmitRefuses holds the SubmitRequest schema to the
// server's checks of a body's fields: what the server refuses as
// malformed (400) the spec refuses too, so that a client that checks its
// requests against the spec is not told they are fine.
func TestSpecRefusesWhatSubmitRefuses(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	sc := newSpecChecker(t, e)
	schema := sc.doc.Components.Schemas["SubmitRequest"].Value
	visit := func(body map[string]any) error { // as JSON, as a client sends it
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		return schema.VisitJSON(decodeAs[any](t, b), openapi3.EnableJSONSchema2020())
	}
	ok := map[string]any{"host": "h1", "command": "true", "env": map[string]string{"A_1": "x"}, "correlation_id": strings.Repeat("c", 200)}
	if err := visit(ok); err != nil {
		t.Fatalf("the spec refuses %v: %v", ok, err)
	}
	for _, body := range []map[string]any{
		{"host": "h1"},
		{"host": "h1", "command": ""},
		{"host": "h1", "command": "true", "correlation_id": strings.Repeat("c", 201)},
		{"host": "h1", "command": "true", "env": map[string]string{"A=B": "x"}},
		{"host": "h1", "command": "true", "env": map[string]string{"1A": "x"}},
	} {
		if resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/orders", body: body, invalid: true}); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%v: %d, want 400: %s", body, resp.StatusCode, b)
		}
		if err := visit(body); err == nil {
			t.Errorf("the spec accepts %v, which the server refuses", body)
		}
	}
}

// TestSpecStatusAndReload validates GET /v1/status, POST
// /v1/admin/reload and GET /readyz of an API whose status and reload are
// a real config watcher's, as serve wires them: the configuration file's
// status after an applied reload, and after a refused one (drift,
// pending_error, last_reload_error).
func TestSpecStatusAndReload(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	path := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := config.NewWatcher(path, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Deps{Store: e.store, Queue: e.q, Logger: e.logger(), Version: "test",
		Intake:   intake.New(e.store, e.q, func() intake.Authorizer { return pol }, intake.Options{}, e.logger()),
		Auth:     func() api.Authenticator { return e.authn.Load() },
		Settings: func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		Status: func() map[string]any {
			st := w.Status()
			return map[string]any{"config": st, "config_drift": st.Drift}
		},
		Reload: func(ctx context.Context, by, confirm string) (config.ReloadResult, error) {
			return w.ReloadWith(ctx, config.ReloadOptions{Confirm: confirm, By: by})
		}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	st := *e
	st.url = hs.URL
	sc := newSpecChecker(t, &st)
	// Both answers describe the file by one closed schema, so a field
	// the watcher adds fails here until the spec names it.
	for _, s := range []string{"ServiceStatus", "ReloadResponse"} {
		if ref := sc.doc.Components.Schemas[s].Value.Properties["config"]; ref == nil || ref.Ref != "#/components/schemas/ConfigStatus" {
			t.Fatalf("%s does not describe its config as ConfigStatus", s)
		}
	}

	want := func(c call, status int, has ...string) {
		t.Helper()
		resp, b := sc.do(c)
		if resp.StatusCode != status {
			t.Fatalf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, status, b)
		}
		for _, s := range has {
			if !strings.Contains(string(b), s) {
				t.Errorf("%s %s: no %s in %s", c.method, c.path, s, b)
			}
		}
	}
	want(call{as: "admin", method: "GET", path: "/v1/status"}, http.StatusOK, `"sha256_loaded"`)
	want(call{as: "admin", method: "POST", path: "/v1/admin/reload"}, http.StatusOK, `"config":{"path":`, `"last_reload"`)
	// The reload's two refusals of their own (ErrorCode's table): a file
	// that drops every policy rule, unconfirmed, and one that sets
	// nothing. Each is 422 with its code, as the spec says.
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("listen: 127.0.0.1:0\npolicy:\n  - {name: r, principals: [alice], hosts: [\"*\"], allow: ['^true$']}\n")
	want(call{as: "admin", method: "POST", path: "/v1/admin/reload"}, http.StatusOK, `"changed":true`)
	write("listen: 127.0.0.1:0\n")
	want(call{as: "admin", method: "POST", path: "/v1/admin/reload"}, http.StatusUnprocessableEntity, `"code":"confirmation_required"`, `"sha256":"`)
	write("# nothing\n")
	want(call{as: "admin", method: "POST", path: "/v1/admin/reload"}, http.StatusUnprocessableEntity, `"code":"config_empty"`)
	if err := os.WriteFile(path, []byte("listen: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want(call{as: "admin", method: "POST", path: "/v1/admin/reload"}, http.StatusUnprocessableEntity)
	want(call{as: "admin", method: "GET", path: "/v1/status"}, http.StatusOK, `"drift":true`, `"pending_error"`, `"last_reload_error"`)
	want(call{method: "GET", path: "/readyz"}, http.StatusOK, `"config_drift":true`)
}

// TestSpecRunbookResponses validates the /v1/runbooks answers of an API
// with a runbooks.dir against the spec: list, read, required-env,
// validate, execute (waited for on a real worker), history, refusals.
func TestSpecRunbookResponses(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}})
	dir := t.TempDir()
	doc := "# Deploy\n\n# Environment Requirements\n```yaml\nVERSION: the release\n```\n\n" +
		"# File System Requirements\n```yaml\nInput:\n  []\n```\n\n# Script\n```sh\necho deploying $VERSION\n```\n\n# History\n"
	if err := os.WriteFile(filepath.Join(dir, "Deploy.md"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Broken.md"), []byte("no heading\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Over the 4 MiB a runbook file may have: it cannot be read (422).
	if err := os.WriteFile(filepath.Join(dir, "Huge.md"), []byte("# Huge\n"+strings.Repeat("x", 5<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default().Runbooks
	cfg.Dir, cfg.Host = dir, "h1"
	settings := api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second}
	// The same API as e's, with runbooks on: e's store, bus and tokens.
	checker := func(set api.Settings, cfg config.Runbooks) *specChecker {
		srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops", "admin"}, Hosts: []string{"*"}, Allow: []string{".*"}},
			func() api.Settings { return set },
			func() config.Runbooks { return cfg })
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		rb := *e
		rb.url = hs.URL
		return newSpecChecker(t, &rb)
	}
	sc := checker(settings, cfg)

	sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks"})
	sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md"})
	sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md/required-env"})
	for _, method := range []string{"POST", "PATCH"} {
		resp, b := sc.do(call{as: "alice", method: method, path: "/v1/runbooks/Deploy.md/validate", body: map[string]any{"env_vars": map[string]any{"VERSION": "1.2"}}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("validate: %d %s", resp.StatusCode, b)
		}
	}
	resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute?wait=20", body: map[string]any{"env_vars": map[string]any{"VERSION": 1.2}},
		hdr: []string{"X-Correlation-Id", "deploy-1"}})
	if resp.StatusCode != http.StatusOK || decodeAs[api.Order](t, b).Runbook != "Deploy.md" {
		t.Fatalf("execute: %d %s", resp.StatusCode, b)
	}
	sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md/history?limit=1"})
	resp, b = sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md/history?limit=1&outputs=none"})
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"stdout":{"encode":null,"bytes":`) {
		t.Fatalf("history without outputs: %d %s", resp.StatusCode, b)
	}
	if resp, b = sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md/history?outputs=all", invalid: true}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("history?outputs=all: %d %s", resp.StatusCode, b)
	}
	// A keyed run: a retry is the first run, another request is refused;
	// the operation lists the headers it reads (the Go client sends its
	// wait as Prefer).
	for _, h := range []string{"Idempotency-Key", "Prefer", "X-Correlation-Id", "X-Recursion-Stack"} {
		if op := sc.doc.Paths.Find("/v1/runbooks/{name}/execute").Post; op.Parameters.GetByInAndName("header", h) == nil {
			t.Errorf("executeRunbook does not list the %s header", h)
		}
	}
	keyed := map[string]any{"host": "offline", "env_vars": map[string]any{"VERSION": "1.3"}}
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", body: keyed, hdr: []string{"Idempotency-Key", "rb-1"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("keyed execute: %d %s", resp.StatusCode, b)
	}
	sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", body: keyed, hdr: []string{"Idempotency-Key", "rb-1"}})
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", body: map[string]any{"host": "offline",
		"env_vars": map[string]any{"VERSION": "1.4"}}, hdr: []string{"Idempotency-Key", "rb-1"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), "idempotency_key_reused") {
		t.Fatalf("execute with a reused key: %d %s", resp.StatusCode, b)
	}
	for _, c := range []call{
		{as: "alice", method: "PATCH", path: "/v1/runbooks/Deploy.md/validate"},                                    // 422: VERSION missing
		{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute"},                                      // 422
		{as: "alice", method: "GET", path: "/v1/runbooks/Nope.md"},                                                 // 404
		{as: "alice", method: "GET", path: "/v1/runbooks/Broken.md/required-env"},                                  // 200 or 422
		{as: "alice", method: "POST", path: "/v1/runbooks/Broken.md/execute"},                                      // 422
		{method: "GET", path: "/v1/runbooks"},                                                                      // 401
		{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", body: `{"env_vars":`, invalid: true}, // 400
		{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/validate", body: map[string]any{}, hdr: []string{"Content-Type", "text/plain"}, invalid: true},
		{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", body: map[string]any{}, hdr: []string{"Content-Type", "text/plain"}, invalid: true},
		{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/validate", body: map[string]any{"env_vars": map[string]any{"V": strings.Repeat("x", 2<<20)}}, invalid: true},
		{as: "alice", method: "GET", path: "/v1/runbooks/Huge.md"},              // 422
		{as: "alice", method: "GET", path: "/v1/runbooks/Huge.md/required-env"}, // 422
		{as: "alice", method: "POST", path: "/v1/runbooks/Huge.md/validate"},    // 422
	} {
		sc.do(c)
	}

	// The spec refuses an env_vars name the server refuses (400).
	for _, name := range []string{"A=B", "1A", ""} {
		body := map[string]any{"env_vars": map[string]any{name: "x"}}
		if resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/validate", body: body, invalid: true}); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("env_vars name %q: %d, want 400: %s", name, resp.StatusCode, b)
		}
		if err := sc.doc.Components.Schemas["RunbookRequest"].Value.VisitJSON(body, openapi3.EnableJSONSchema2020()); err == nil {
			t.Errorf("the spec accepts env_vars name %q", name)
		}
	}

	// What every runbook route answers before or beside its own work:
	// the network ACL (403), the rate limits (429), and a runbooks.dir
	// that cannot be read (503).
	deny, err := netacl.New(config.ACL{Allow: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	denied, limited := settings, settings
	denied.ACL, limited.RatePerPrincipal = deny, 1
	gone := cfg
	gone.Dir = filepath.Join(dir, "gone")
	for _, v := range []struct {
		sc     *specChecker
		status int
	}{{checker(denied, cfg), http.StatusForbidden}, {checker(limited, cfg), http.StatusTooManyRequests}, {checker(settings, gone), http.StatusServiceUnavailable}} {
		if v.status == http.StatusTooManyRequests {
			v.sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks"}) // the one request of the minute
		}
		for _, c := range []call{
			{as: "alice", method: "GET", path: "/v1/runbooks"},
			{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md"},
			{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md/required-env"},
			{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md/history"},
			{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/validate"},
			{as: "alice", method: "PATCH", path: "/v1/runbooks/Deploy.md/validate"},
			{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute"},
		} {
			if resp, b := v.sc.do(c); resp.StatusCode != v.status {
				t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, v.status, b)
			}
		}
	}
}
