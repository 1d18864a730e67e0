package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
)

// rest sends a native REST request as who through e's handler, with hdr
// as name/value pairs (a name given twice is sent twice).
func (e *uiEnv) rest(who, method, path string, body any, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			e.t.Fatal(err)
		}
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+e.tokens[who])
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// TestRunIfMatch: a REST client binds a run to the definition it
// reviewed. GET of an action or a runbook answers a strong ETag (HEAD the
// same); a run whose If-Match names it runs; after the definition changed
// (a reload, an edited file) the same If-Match is 412
// precondition_failed and nothing runs; a weak tag never matches;
// If-Match * and a list naming the current tag run; a malformed If-Match
// is 400, never a run without its condition.
func TestRunIfMatch(t *testing.T) {
	e := newUIEnv(t)
	count := func(name string) int {
		var n int
		if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE action = $1 OR runbook = $1`, name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	etag := func(path string) string {
		t.Helper()
		rec := e.rest("alice", "GET", path, nil)
		tag := rec.Header().Get("ETag")
		if rec.Code != 200 || !strings.HasPrefix(tag, `"`) || len(tag) < 3 {
			t.Fatalf("GET %s: %d, ETag %q", path, rec.Code, tag)
		}
		if head := e.rest("alice", "HEAD", path, nil); head.Header().Get("ETag") != tag {
			t.Fatalf("HEAD %s: ETag %q, GET's %q", path, head.Header().Get("ETag"), tag)
		}
		// A client that polls the definition is answered 304 while it
		// is unchanged (conditional.go).
		if again := e.rest("alice", "GET", path, nil, "If-None-Match", tag); again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Fatalf("GET %s If-None-Match %s: %d, %d bytes; want 304, none", path, tag, again.Code, again.Body.Len())
		}
		return tag
	}
	wantCode := func(rec *httptest.ResponseRecorder, status int, code, reason string) {
		t.Helper()
		var eb api.ErrorBody
		if rec.Code != status || json.Unmarshal(rec.Body.Bytes(), &eb) != nil || string(eb.Error.Code) != code ||
			reason != "" && eb.Error.Details["reason"] != reason {
			t.Fatalf("got %d %s, want %d %s (%s)", rec.Code, rec.Body, status, code, reason)
		}
	}
	runTag := func(hdr ...string) *httptest.ResponseRecorder {
		return e.rest("alice", "POST", "/v1/actions/tag/run", map[string]any{"host": "web-1", "params": map[string]any{"n": "1234"}}, hdr...)
	}

	old := etag("/v1/actions/tag")
	if rec := runTag("If-Match", old); rec.Code != http.StatusAccepted {
		t.Fatalf("a run naming the current ETag: %d %s", rec.Code, rec.Body)
	}
	// A reload that changes only the action's hosts changes what GET
	// showed, hence its tag.
	acts := uiActions()
	for i, d := range acts.Definitions {
		if d.Name == "tag" {
			acts.Definitions[i].Hosts = []string{"web-1", "web-2"}
		}
	}
	set, err := action.New(acts)
	if err != nil {
		t.Fatal(err)
	}
	e.actions.Store(set)
	now := etag("/v1/actions/tag")
	if now == old {
		t.Fatal("the ETag did not change with the action")
	}
	wantCode(runTag("If-Match", old), http.StatusPreconditionFailed, "precondition_failed", "action_changed")
	rec := runTag("If-Match", "W/"+now)
	wantCode(rec, http.StatusPreconditionFailed, "precondition_failed", "action_changed")
	if !strings.Contains(rec.Body.String(), "weak") {
		t.Errorf("the refusal of a weak tag does not say why: %s", rec.Body)
	}
	if n := count("tag"); n != 1 {
		t.Fatalf("%d runs of tag, want 1: a refused precondition ran", n)
	}
	for _, hdr := range [][]string{
		{"If-Match", now},
		{"If-Match", "*"},
		{"If-Match", old + ", " + now},
		{"If-Match", old, "If-Match", now},
		{"If-Match", " , " + now + " ,"},
	} {
		if rec := runTag(hdr...); rec.Code != http.StatusAccepted {
			t.Errorf("%q: %d %s", hdr, rec.Code, rec.Body)
		}
	}
	for _, bad := range []string{now[1 : len(now)-1], "*, " + now, `"a b"`, ",", "W/", `"x`, `W/"x" "y"`} {
		wantCode(runTag("If-Match", bad), http.StatusBadRequest, "invalid_request", "if_match_malformed")
	}
	if n := count("tag"); n != 6 {
		t.Fatalf("%d runs of tag, want 6", n)
	}
	// The action's 404 is not hidden behind the condition.
	wantCode(e.rest("alice", "POST", "/v1/actions/nope/run", map[string]any{"host": "web-1"}, "If-Match", now), http.StatusNotFound, "not_found", "")

	// A runbook edited after its GET.
	execute := func(hdr ...string) *httptest.ResponseRecorder {
		return e.rest("alice", "POST", "/v1/runbooks/Hello.md/execute", map[string]any{"env_vars": map[string]any{"NAME": "x"}}, hdr...)
	}
	rbOld := etag("/v1/runbooks/Hello.md")
	book, err := os.ReadFile(filepath.Join(e.rbDir, "Hello.md"))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(book), `echo "hello from a runbook, $NAME"`, `echo "goodbye, $NAME"`, 1)
	if err := os.WriteFile(filepath.Join(e.rbDir, "Hello.md"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(execute("If-Match", rbOld), http.StatusPreconditionFailed, "precondition_failed", "runbook_changed")
	if n := count("Hello.md"); n != 0 {
		t.Fatalf("%d runs of Hello.md after If-Match of its old file, want 0", n)
	}
	wantCode(execute("If-Match", "nonsense"), http.StatusBadRequest, "invalid_request", "if_match_malformed")
	if rec := execute("If-Match", etag("/v1/runbooks/Hello.md")); rec.Code != http.StatusAccepted {
		t.Fatalf("a run of the runbook naming its current ETag: %d %s", rec.Code, rec.Body)
	}
	if rec := execute(); rec.Code != http.StatusAccepted {
		t.Fatalf("a run without If-Match: %d %s", rec.Code, rec.Body)
	}
}

// TestSpecIfMatch holds the conditional runs to openapi.yaml: the GETs'
// ETag header, the run and execute operations' If-Match parameter, their
// 412 precondition_failed and the 400 of a malformed If-Match, for an
// action and a runbook.
func TestSpecIfMatch(t *testing.T) {
	count := config.Action{Name: "count", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "n", Type: "int", Min: ptrTo[int64](1), Max: ptrTo[int64](5)}},
		Command: []string{"/bin/echo", "{n}"}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{count}}})
	sc := newSpecChecker(t, e)
	resp, _ := sc.do(call{as: "alice", method: "GET", path: "/v1/actions/count"})
	tag := resp.Header.Get("ETag")
	if tag == "" {
		t.Fatal("GET /v1/actions/count answered no ETag")
	}
	run := map[string]any{"host": "offline", "params": map[string]any{"n": 2}}
	for _, c := range []struct {
		ifMatch string
		status  int
		code    string
	}{
		{tag, http.StatusAccepted, ""},
		{`"0123"`, http.StatusPreconditionFailed, "precondition_failed"},
		{"W/" + tag, http.StatusPreconditionFailed, "precondition_failed"},
		{"0123", http.StatusBadRequest, "invalid_request"},
	} {
		resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/actions/count/run", body: run, hdr: []string{"If-Match", c.ifMatch}})
		if c.code == "" {
			if resp.StatusCode != c.status {
				t.Errorf("If-Match %s: %d %s", c.ifMatch, resp.StatusCode, b)
			}
			continue
		}
		wantError(t, resp.StatusCode, b, c.status, c.code)
	}

	cfg := deployRunbook(t, "{}", "echo deploying", "offline")
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops", "admin"}, Hosts: []string{"*"}, Allow: []string{".*"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	rb := *e
	rb.url = hs.URL
	sc = newSpecChecker(t, &rb)
	resp, _ = sc.do(call{as: "alice", method: "GET", path: "/v1/runbooks/Deploy.md"})
	tag = resp.Header.Get("ETag")
	if tag == "" {
		t.Fatal("GET /v1/runbooks/Deploy.md answered no ETag")
	}
	resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", hdr: []string{"If-Match", `"0123", "4567"`}})
	wantError(t, resp.StatusCode, b, http.StatusPreconditionFailed, "precondition_failed")
	resp, b = sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", hdr: []string{"If-Match", "*, " + tag}})
	wantError(t, resp.StatusCode, b, http.StatusBadRequest, "invalid_request")
	if resp, b := sc.do(call{as: "alice", method: "POST", path: "/v1/runbooks/Deploy.md/execute", hdr: []string{"If-Match", tag}}); resp.StatusCode != http.StatusAccepted {
		t.Errorf("execute naming the ETag: %d %s", resp.StatusCode, b)
	}
}

// TestRunbookRetryAfterItsEdit: a runbook run accepted with an
// Idempotency-Key and an If-Match, whose answer was lost, is retried
// after the file was edited. The retry is answered with the first run
// (Idempotent-Replayed); it was 412 and said nothing ran, while the
// first run had. A new key with the old tag is still 412, and nothing
// runs twice.
func TestRunbookRetryAfterItsEdit(t *testing.T) {
	e := newUIEnv(t)
	body := map[string]any{"env_vars": map[string]any{"NAME": "x"}}
	get := e.rest("alice", "GET", "/v1/runbooks/Hello.md", nil)
	tag := get.Header().Get("ETag")
	first := e.rest("alice", "POST", "/v1/runbooks/Hello.md/execute", body, "If-Match", tag, "Idempotency-Key", "rb-edit")
	var o api.Order
	if first.Code != http.StatusAccepted || json.Unmarshal(first.Body.Bytes(), &o) != nil || first.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("first run: %d %s", first.Code, first.Body)
	}
	book, err := os.ReadFile(filepath.Join(e.rbDir, "Hello.md"))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(book), `echo "hello from a runbook, $NAME"`, `echo "goodbye, $NAME"`, 1)
	if err := os.WriteFile(filepath.Join(e.rbDir, "Hello.md"), []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	retry := e.rest("alice", "POST", "/v1/runbooks/Hello.md/execute", body, "If-Match", tag, "Idempotency-Key", "rb-edit")
	var again api.Order
	if retry.Code/100 != 2 || json.Unmarshal(retry.Body.Bytes(), &again) != nil || again.ID != o.ID ||
		retry.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry after the edit: %d %s (Idempotent-Replayed %q); want run %s", retry.Code, retry.Body,
			retry.Header().Get("Idempotent-Replayed"), o.ID)
	}
	if rec := e.rest("alice", "POST", "/v1/runbooks/Hello.md/execute", body, "If-Match", tag, "Idempotency-Key", "rb-edit-2"); rec.Code != http.StatusPreconditionFailed {
		t.Errorf("a new key with the old tag: %d %s, want 412", rec.Code, rec.Body)
	}
	if rec := e.rest("carol", "POST", "/v1/runbooks/Hello.md/execute", body, "If-Match", tag, "Idempotency-Key", "rb-edit"); rec.Code/100 == 2 || strings.Contains(rec.Body.String(), o.ID.String()) {
		t.Errorf("another principal with the key: %d %s", rec.Code, rec.Body)
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM orders WHERE runbook = 'Hello.md'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d runs of Hello.md, want 1", n)
	}
}
