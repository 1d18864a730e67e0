package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker/systemd"
)

func ptrTo[T any](v T) *T { return &v }

// hashAction prints the SHA-256 of its secret: the command gets the value
// (in its environment) and the test can tell, while the value itself
// appears nowhere.
var hashAction = config.Action{Name: "hash-secret", Hosts: []string{"act-*"}, Roles: []string{"ops"},
	Params: []config.ActionParam{
		{Name: "label", Pattern: "[a-z]{1,16}"},
		{Name: "pw", Pattern: "[A-Za-z0-9]{8,64}", Secret: true},
	},
	Command: []string{"/bin/sh", "-c", `printf '%s:' "$1"; printf '%s' "$PW" | sha256sum | cut -c1-64`, "sh", "{label}"},
	Env:     []config.ActionEnv{{Name: "PW", Value: "{pw}"}}}

// TestActionSecretNeverStored runs an action with a secret param and then
// looks for the secret everywhere it could have leaked: every table of
// PostgreSQL (orders, events, the refusal audit…), the API's and the
// worker's logs, every message on the bus, and the answers. The command
// did get it: it prints its hash.
func TestActionSecretNeverStored(t *testing.T) {
	logs := &testenv.LogBuffer{}
	acts := config.Actions{Bus: "system", Definitions: []config.Action{hashAction}}
	e := newAPIEnv(t, envOptions{hosts: []string{"act-1"}, actions: acts, workerActions: acts,
		logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	nc, err := nats.Connect(e.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var busMu sync.Mutex
	var bus [][]byte
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		busMu.Lock()
		defer busMu.Unlock()
		bus = append(bus, append([]byte(m.Subject+" "), m.Data...))
		for k, v := range m.Header {
			bus = append(bus, []byte(k+": "+strings.Join(v, ",")))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const secret = "Sup3rS3cretValue"
	code, b := e.do("alice", "POST", "/v1/actions/hash-secret/run?wait=20",
		map[string]any{"host": "act-1", "params": map[string]any{"label": "abc", "pw": secret}})
	if code != 200 {
		t.Fatalf("run: %d %s", code, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(secret))
	if o.Status != "succeeded" || o.Result == nil || strings.TrimSpace(o.Result.Stdout.Content) != "abc:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("the command did not get the secret: %s", b)
	}
	if o.Kind != "action" || o.Command != "action:hash-secret" || o.Action == nil || o.Action.Params["label"] != "abc" ||
		len(o.Action.SecretParams) != 1 || o.Action.SecretParams[0] != "pw" || len(o.Action.Params) != 1 {
		t.Errorf("the order shows %+v %+v", o, o.Action)
	}

	// A refused run: the value fails its pattern; the refusal is audited
	// and logged without it.
	const badSecret = "bad;Secret Value"
	code, b = e.do("alice", "POST", "/v1/actions/hash-secret/run",
		map[string]any{"host": "act-1", "params": map[string]any{"label": "abc", "pw": badSecret}})
	wantError(t, code, b, 422, "unprocessable")
	if bytes.Contains(b, []byte("Secret Value")) {
		t.Errorf("the refusal repeats the secret: %s", b)
	}
	// The stored order, read back, shows no secret either.
	code, b = e.do("alice", "GET", "/v1/orders/"+o.ID.String(), nil)
	if code != 200 || bytes.Contains(b, []byte(secret)) {
		t.Errorf("GET the order: %d %s", code, b)
	}

	for _, s := range []string{secret, badSecret, "Secret Value"} {
		e.assertNotInDatabase(s)
		if strings.Contains(logs.String(), s) {
			t.Errorf("the logs hold %q", s)
		}
		busMu.Lock()
		for _, m := range bus {
			if bytes.Contains(m, []byte(s)) {
				t.Errorf("a bus message holds %q: %.200s", s, m)
			}
		}
		busMu.Unlock()
	}
	// The searches see what is there: the non-secret value is in the
	// database, the order in the logs and on the bus.
	if e.countInDatabase(o.ID.String()) == 0 || e.countInDatabase("label") == 0 {
		t.Error("the database search finds nothing it should")
	}
	if !strings.Contains(logs.String(), o.ID.String()) {
		t.Error("the log capture saw nothing of the order")
	}
	busMu.Lock()
	if !bytes.Contains(bytes.Join(bus, nil), []byte(o.ID.String())) {
		t.Error("the bus capture saw nothing of the order")
	}
	busMu.Unlock()
}

// assertNotInDatabase fails when any row of any table of the public
// schema holds s, in any column (its text form).
func (e *apiEnv) assertNotInDatabase(s string) {
	e.t.Helper()
	if n := e.countInDatabase(s); n > 0 {
		e.t.Errorf("the database holds %q in %d row(s)", s, n)
	}
}

// countInDatabase counts the rows of every table that hold s.
func (e *apiEnv) countInDatabase(s string) int {
	e.t.Helper()
	total := 0
	ctx := testenv.Context(e.t)
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`)
	if err != nil {
		e.t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 5 {
		e.t.Fatalf("tables %v: %v", tables, err)
	}
	for _, tbl := range tables {
		var n int
		q := fmt.Sprintf(`SELECT count(*) FROM %s t WHERE position($1 in t::text) > 0 OR position($2 in t::text) > 0`,
			pgx.Identifier{tbl}.Sanitize())
		// bytea columns show as hex in a row's text form.
		if err := conn.QueryRow(ctx, q, s, hex.EncodeToString([]byte(s))).Scan(&n); err != nil {
			e.t.Fatalf("search %s: %v", tbl, err)
		}
		if n > 0 {
			e.t.Logf("table %s holds %.40q in %d row(s)", tbl, s, n)
		}
		total += n
	}
	return total
}

// TestActionRunValidation: what the API refuses up front, with the
// failing param named; who sees which action.
func TestActionRunValidation(t *testing.T) {
	restart := config.Action{Name: "restart-example", Hosts: []string{"web-*"}, Principals: []string{"bob"},
		Confirm: true, Params: []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}", Units: "example@*.service"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}
	count := config.Action{Name: "count", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "n", Type: "int", Min: ptrTo[int64](1), Max: ptrTo[int64](5)}},
		Command: []string{"/bin/echo", "{n}"}}
	acts := config.Actions{Bus: "system", Definitions: []config.Action{hashAction, restart, count}}
	e := newAPIEnv(t, envOptions{actions: acts})

	names := func(as string) []string {
		code, b := e.do(as, "GET", "/v1/actions", nil)
		var l struct{ Actions []api.ActionView }
		if code != 200 || json.Unmarshal(b, &l) != nil {
			t.Fatalf("list as %s: %d %s", as, code, b)
		}
		var out []string
		for _, a := range l.Actions {
			out = append(out, a.Name)
		}
		return out
	}
	if got := strings.Join(names("alice"), ","); got != "hash-secret,count" {
		t.Errorf("alice sees %s", got)
	}
	if got := strings.Join(names("bob"), ","); got != "hash-secret,restart-example,count" {
		t.Errorf("bob sees %s", got)
	}
	if got := names("auditor"); len(got) != 0 {
		t.Errorf("auditor sees %v", got)
	}
	code, b := e.do("bob", "GET", "/v1/actions/restart-example", nil)
	var v api.ActionView
	if code != 200 || json.Unmarshal(b, &v) != nil || v.Kind != "systemd" || v.Unit != "example@{id}.service" || !v.Confirm ||
		len(v.Params) != 1 || v.Params[0].Units != "example@*.service" || !v.Params[0].Required {
		t.Errorf("GET restart-example: %d %s", code, b)
	}

	run := func(as, name string, body any) (int, []byte) {
		return e.do(as, "POST", "/v1/actions/"+name+"/run", body)
	}
	code, b = e.do("alice", "GET", "/v1/actions/restart-example", nil)
	wantError(t, code, b, 404, "not_found")
	code, b = run("alice", "restart-example", map[string]any{"host": "web-1", "params": map[string]any{"id": "0042"}})
	wantError(t, code, b, 404, "not_found")
	code, b = run("alice", "nope", map[string]any{"host": "web-1"})
	wantError(t, code, b, 404, "not_found")
	code, b = run("bob", "restart-example", map[string]any{"host": "db-1", "params": map[string]any{"id": "0042"}})
	wantError(t, code, b, 403, "forbidden")
	code, b = run("bob", "restart-example", map[string]any{"host": "web 1", "params": map[string]any{"id": "0042"}})
	wantError(t, code, b, 400, "invalid_request")
	code, b = run("bob", "restart-example", map[string]any{"host": "web-1", "params": map[string]any{"id": "0042", "x": 1}, "command": "reboot"})
	wantError(t, code, b, 400, "invalid_request") // unknown field
	for _, c := range []struct {
		name   string
		params map[string]any
		param  string
	}{
		{"restart-example", map[string]any{"id": "0042;reboot"}, "id"},
		{"restart-example", map[string]any{"id": "0042\n"}, "id"},
		{"restart-example", map[string]any{"id": "00\x0042"}, "id"},
		{"restart-example", map[string]any{"id": 42}, "id"},
		{"restart-example", map[string]any{"id": 1234}, "id"}, // matches the pattern, but a number for a string param
		{"restart-example", map[string]any{}, "id"},
		{"restart-example", map[string]any{"id": "0042", "unit": "dbus.service"}, "unit"},
		{"restart-example", map[string]any{"id": nil}, "id"},
		{"restart-example", map[string]any{"id": []string{"0042"}}, "id"},
		{"count", map[string]any{"n": 6}, "n"},
		{"count", map[string]any{"n": 1.5}, "n"},
		{"count", map[string]any{"n": "03"}, "n"},
		{"count", map[string]any{"n": true}, "n"},
	} {
		code, b := run("bob", c.name, map[string]any{"host": "web-1", "params": c.params})
		var eb api.ErrorBody
		if code != 422 || json.Unmarshal(b, &eb) != nil || eb.Error.Details["param"] != c.param {
			t.Errorf("%s %v: %d %s, want 422 naming %s", c.name, c.params, code, b, c.param)
		}
	}
	// Every refusal is in the audit, a NUL in a param too (as U+FFFD:
	// PostgreSQL's jsonb refuses the byte).
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM rejections
		WHERE request->>'action' = 'restart-example' AND request->'params'->>'id' = '00'||chr(65533)||'42'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("audit rows of the refused run with a NUL: %d, %v", n, err)
	}
	// Accepted: 202, an ordinary order (no worker serves web-1 here).
	code, b = run("bob", "restart-example", map[string]any{"host": "web-1", "params": map[string]any{"id": "0042"}})
	var o api.Order
	if code != 202 || json.Unmarshal(b, &o) != nil || o.Status != "queued" || o.Action.Params["id"] != "0042" ||
		o.Policy.Decision != "allow" || len(o.Policy.Matched) != 1 || o.Policy.Matched[0] != "action:restart-example:principal=bob" {
		t.Fatalf("run: %d %s", code, b)
	}
	// History by action.
	code, b = e.do("bob", "GET", "/v1/orders?action=restart-example", nil)
	var l api.OrderList
	if code != 200 || json.Unmarshal(b, &l) != nil || len(l.Orders) != 1 || l.Orders[0].ID != o.ID {
		t.Errorf("orders of the action: %d %s", code, b)
	}
	code, b = e.do("bob", "GET", "/v1/orders?action=count", nil)
	if code != 200 || json.Unmarshal(b, &l) != nil || len(l.Orders) != 0 {
		t.Errorf("orders of another action: %d %s", code, b)
	}
	// Without a lister, choices are 503; an unknown host 400; a host not
	// in the action's 403.
	code, b = e.do("bob", "GET", "/v1/actions/restart-example/choices?host=web-1", nil)
	wantError(t, code, b, 503, "unavailable")
	code, b = e.do("bob", "GET", "/v1/actions/restart-example/choices?host=db-1", nil)
	wantError(t, code, b, 403, "forbidden")
	// A plain order cannot claim to be an action.
	code, b = e.do("bob", "POST", "/v1/orders", map[string]any{"kind": "action", "host": "web-1", "command": "action:restart-example"})
	wantError(t, code, b, 422, "unprocessable")
}

// TestActionRunItsPrincipalMayNotRunIsAudited: a run of an action that
// does not name the principal is answered 404, as one that does not exist
// (docs/actions.md), yet it is a policy refusal, and docs/sql.md's
// rejections keep every one; a name no action has is an ordinary 404.
func TestActionRunItsPrincipalMayNotRunIsAudited(t *testing.T) {
	restart := config.Action{Name: "restart-example", Hosts: []string{"web-*"}, Principals: []string{"bob"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{restart}}})

	code, b := e.do("alice", "POST", "/v1/actions/restart-example/run", map[string]any{"host": "web-1", "params": map[string]any{"id": "0042"}})
	wantError(t, code, b, 404, "not_found")
	code, b = e.do("alice", "POST", "/v1/actions/nope/run", map[string]any{"host": "web-1"})
	wantError(t, code, b, 404, "not_found")

	rows, err := e.pool.Query(t.Context(), `SELECT principal, path, status, code, reason FROM rejections ORDER BY at`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var principal, path, code, reason string
		var status int
		if err := rows.Scan(&principal, &path, &status, &code, &reason); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %d %s %s", principal, path, status, code, reason))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := "alice /v1/actions/restart-example/run 404 forbidden action restart-example: principal alice may not run it"
	if len(got) != 1 || got[0] != want {
		t.Errorf("rejections:\n%s\nwant only:\n%s", strings.Join(got, "\n"), want)
	}
}

// TestActionNotFoundSaysWhoseList: an action the principal may not run
// is answered as one that does not exist, and the one message for both
// says that the list is the principal's and where it is (an admin told
// "no action named restart-example" looked for a typo in a config that
// defined it for the role ops; here the action names bob). The two answers stay the same but for
// the name.
func TestActionNotFoundSaysWhoseList(t *testing.T) {
	restart := config.Action{Name: "restart-example", Hosts: []string{"web-*"}, Principals: []string{"bob"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{restart}}})
	const tail = " that you may run: GET /v1/actions (orderly action ls) lists yours; an action's roles and principals say who may run it"
	for _, name := range []string{"restart-example", "nope"} {
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/v1/actions/" + name, nil},
			{"POST", "/v1/actions/" + name + "/run", map[string]any{"host": "web-1", "params": map[string]any{"id": "0042"}}},
		} {
			code, b := e.do("alice", req.method, req.path, req.body)
			var eb api.ErrorBody
			if code != http.StatusNotFound || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "not_found" || eb.Error.Message != "no action named "+name+tail {
				t.Errorf("%s %s as alice: %d %s", req.method, req.path, code, b)
			}
		}
	}
}

// TestActionLimits: at most runs per window across concurrent submitters
// (the database serializes them), and at most concurrent_per_host
// queued or running per host, answered 429 with a retry time.
func TestActionLimits(t *testing.T) {
	burst := config.Action{Name: "burst", Hosts: []string{"*"}, Roles: []string{"ops"},
		Command: []string{"/bin/true"}, Limit: config.ActionLimit{Runs: 3, Per: time.Minute}}
	one := config.Action{Name: "one-at-a-time", Hosts: []string{"*"}, Roles: []string{"ops"},
		Command: []string{"/bin/true"}, Limit: config.ActionLimit{ConcurrentPerHost: 1}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{burst, one}}})

	const tries = 8
	codes := make(chan int, tries)
	bodies := make(chan []byte, tries)
	var wg sync.WaitGroup
	for i := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			as := []string{"alice", "bob"}[i%2]
			code, b := e.do(as, "POST", "/v1/actions/burst/run", map[string]any{"host": fmt.Sprintf("lim-%d", i)})
			codes <- code
			bodies <- b
		}()
	}
	wg.Wait()
	close(codes)
	close(bodies)
	accepted, limited := 0, 0
	for code := range codes {
		b := <-bodies
		switch code {
		case 202:
			accepted++
		case 429:
			limited++
			var eb api.ErrorBody
			if json.Unmarshal(b, &eb) != nil || eb.Error.Details["reason"] != "action_limit" {
				t.Errorf("429 body %s", b)
			}
			if s, _ := eb.Error.Details["retry_after_seconds"].(float64); s < 1 || s > 60 {
				t.Errorf("retry_after_seconds %v", eb.Error.Details["retry_after_seconds"])
			}
		default:
			t.Errorf("unexpected %d %s", code, b)
		}
	}
	if accepted != 3 || limited != tries-3 {
		t.Errorf("%d accepted, %d limited; want 3 and %d", accepted, limited, tries-3)
	}

	// No worker serves these hosts, so a run stays queued: the second on
	// the same host is refused, another host is free.
	code, b := e.do("alice", "POST", "/v1/actions/one-at-a-time/run", map[string]any{"host": "q-1"})
	if code != 202 {
		t.Fatalf("first: %d %s", code, b)
	}
	code, b = e.do("bob", "POST", "/v1/actions/one-at-a-time/run", map[string]any{"host": "q-1"})
	wantError(t, code, b, 429, "rate_limited")
	// The header says when to come back, as for every 429: clients wait
	// for it rather than retrying at once.
	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/actions/one-at-a-time/run", strings.NewReader(`{"host":"q-1"}`))
	req.Header.Set("Authorization", "Bearer "+e.tokens["bob"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || err != nil || ra < 1 {
		t.Errorf("action limit: %d with Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	code, b = e.do("bob", "POST", "/v1/actions/one-at-a-time/run", map[string]any{"host": "q-2"})
	if code != 202 {
		t.Fatalf("another host: %d %s", code, b)
	}
	// A retry with the same Idempotency-Key is answered with its order,
	// not refused by the limit it set.
	code, b = e.do("alice", "POST", "/v1/actions/one-at-a-time/run", map[string]any{"host": "q-3"}, "Idempotency-Key", "k1")
	code2, b2 := e.do("alice", "POST", "/v1/actions/one-at-a-time/run", map[string]any{"host": "q-3"}, "Idempotency-Key", "k1")
	var o1, o2 api.Order
	if code != 202 || code2 != 202 || json.Unmarshal(b, &o1) != nil || json.Unmarshal(b2, &o2) != nil || o1.ID != o2.ID {
		t.Errorf("idempotent retry: %d %s / %d %s", code, b, code2, b2)
	}
}

// TestActionLimitRefusalSaysWhen: a run over `runs` per `per` is told
// when the oldest counted run leaves the window (Retry-After, the body's
// retry_at and its message, all from the refusing statement), and one
// over concurrent_per_host which order holds the slot.
func TestActionLimitRefusalSaysWhen(t *testing.T) {
	hourly := config.Action{Name: "hourly", Hosts: []string{"*"}, Roles: []string{"ops"},
		Command: []string{"/bin/true"}, Limit: config.ActionLimit{Runs: 1, Per: time.Hour}}
	one := config.Action{Name: "one-at-a-time", Hosts: []string{"*"}, Roles: []string{"ops"},
		Command: []string{"/bin/true"}, Limit: config.ActionLimit{ConcurrentPerHost: 1}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{hourly, one}}})

	refused := func(name, host string) (*http.Response, api.ErrorBody) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", e.url+"/v1/actions/"+name+"/run", strings.NewReader(`{"host":"`+host+`"}`))
		req.Header.Set("Authorization", "Bearer "+e.tokens["bob"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb api.ErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || resp.StatusCode != 429 || eb.Error.Code != "rate_limited" {
			t.Fatalf("%s on %s: %d %+v (%v), want 429 rate_limited", name, host, resp.StatusCode, eb, err)
		}
		return resp, eb
	}

	code, b := e.do("alice", "POST", "/v1/actions/hourly/run", map[string]any{"host": "h-1"})
	var first api.Order
	if code != 202 || json.Unmarshal(b, &first) != nil {
		t.Fatalf("first run: %d %s", code, b)
	}
	resp, eb := refused("hourly", "h-2")
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 3590 || ra > 3600 {
		t.Errorf("Retry-After %q, want 3590..3600 s (1 run per hour, the first just now)", resp.Header.Get("Retry-After"))
	}
	if s, _ := eb.Error.Details["retry_after_seconds"].(float64); int(s) != ra {
		t.Errorf("retry_after_seconds %v, Retry-After %d: want the same", eb.Error.Details["retry_after_seconds"], ra)
	}
	s, _ := eb.Error.Details["retry_at"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("retry_at %q: %v", s, err)
	}
	// Exactly the first run's submission plus the window: the oldest
	// counted run leaving it is when the action may run again.
	if want := first.SubmittedAt.Add(time.Hour); !at.Equal(want) {
		t.Errorf("retry_at %s, want %s (the first run's submission + 1 h)", at, want)
	}
	if want := "may run again in " + strconv.Itoa(ra) + " s (at " + at.UTC().Format("15:04:05") + " UTC)"; !strings.Contains(eb.Error.Message, want) {
		t.Errorf("message %q does not say %q", eb.Error.Message, want)
	}

	// No worker serves the host: the first run stays queued and holds
	// the only slot.
	code, b = e.do("alice", "POST", "/v1/actions/one-at-a-time/run", map[string]any{"host": "q-1"})
	var holder api.Order
	if code != 202 || json.Unmarshal(b, &holder) != nil {
		t.Fatalf("first run: %d %s", code, b)
	}
	_, eb = refused("one-at-a-time", "q-1")
	if got := eb.Error.Details["held_by"]; got != holder.ID.String() {
		t.Errorf("held_by %v, want the queued run %s", got, holder.ID)
	}
	if !strings.Contains(eb.Error.Message, "order "+holder.ID.String()+" holds the slot") {
		t.Errorf("message %q does not name the holder %s", eb.Error.Message, holder.ID)
	}
	if _, ok := eb.Error.Details["retry_at"]; ok {
		t.Errorf("a concurrency refusal gives a retry_at: %+v", eb.Error.Details)
	}
}

// TestWorkerRejectsWhatTheAPIAllowed: the API's config allows a value
// (and an action) the worker's own config does not; the order is
// accepted and the worker ends it rejected, running nothing.
func TestWorkerRejectsWhatTheAPIAllowed(t *testing.T) {
	loose := config.Action{Name: "echo", Hosts: []string{"*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "word", Pattern: "[a-z;]+"}},
		Command: []string{"/bin/echo", "{word}"}}
	strict := loose
	strict.Params = []config.ActionParam{{Name: "word", Pattern: "[a-z]+"}}
	apiOnly := config.Action{Name: "api-only", Hosts: []string{"*"}, Roles: []string{"ops"}, Command: []string{"/bin/true"}}
	e := newAPIEnv(t, envOptions{hosts: []string{"wr-1"},
		actions:       config.Actions{Bus: "system", Definitions: []config.Action{loose, apiOnly}},
		workerActions: config.Actions{Bus: "system", Definitions: []config.Action{strict}}})

	for _, c := range []struct {
		name   string
		params map[string]any
		reason string
	}{
		{"echo", map[string]any{"word": "abc;def"}, "params.word"},
		{"api-only", nil, "no action"},
	} {
		code, b := e.do("alice", "POST", "/v1/actions/"+c.name+"/run?wait=20", map[string]any{"host": "wr-1", "params": c.params})
		var o api.Order
		if code != 200 || json.Unmarshal(b, &o) != nil || o.Status != "rejected" || o.Result == nil || o.Result.Error == nil ||
			!strings.Contains(*o.Result.Error, strings.TrimPrefix(c.reason, "params.")) || o.StartedAt == nil {
			t.Errorf("%s: %d %s", c.name, code, b)
		}
	}
	code, b := e.do("alice", "POST", "/v1/actions/echo/run?wait=20", map[string]any{"host": "wr-1", "params": map[string]any{"word": "abc"}})
	var o api.Order
	if code != 200 || json.Unmarshal(b, &o) != nil || o.Status != "succeeded" || o.Result.Stdout.Content != "abc\n" {
		t.Errorf("a value both allow: %d %s", code, b)
	}
}

// TestActionChoices asks a host's worker over the bus for the units an
// action param offers, with their state; the worker answers only for
// globs of its own config.
func TestActionChoices(t *testing.T) {
	restart := config.Action{Name: "restart-example", Hosts: []string{"ch-*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}", Units: "example@*.service"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}
	other := restart
	other.Name = "restart-other"
	other.Params = []config.ActionParam{{Name: "id", Pattern: "[0-9]{4}", Units: "other@*.service"}}
	other.Systemd.Unit = "other@{id}.service"
	e := newAPIEnv(t, envOptions{hosts: []string{"ch-1"},
		actions:       config.Actions{Bus: "system", Definitions: []config.Action{restart, other}},
		workerActions: config.Actions{Bus: "system", Definitions: []config.Action{restart}},
		units: []systemd.Unit{
			{Name: "example@0042.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
			{Name: "example@0043.service", LoadState: "loaded", ActiveState: "failed", SubState: "failed"},
			{Name: "example@abc.service", LoadState: "loaded", ActiveState: "inactive", SubState: "dead"},
			{Name: "other@0001.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
			{Name: "dbus.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
		}})
	code, b := e.do("alice", "GET", "/v1/actions/restart-example/choices?host=ch-1", nil)
	var got struct {
		Params map[string][]struct {
			Value       string `json:"value"`
			Valid       bool   `json:"valid"`
			Unit        string `json:"unit"`
			ActiveState string `json:"active_state"`
		} `json:"params"`
	}
	if code != 200 || json.Unmarshal(b, &got) != nil {
		t.Fatalf("choices: %d %s", code, b)
	}
	var seen []string
	for _, c := range got.Params["id"] {
		seen = append(seen, fmt.Sprintf("%s/%v/%s/%s", c.Value, c.Valid, c.Unit, c.ActiveState))
	}
	want := "0042/true/example@0042.service/active 0043/true/example@0043.service/failed abc/false/example@abc.service/inactive"
	if strings.Join(seen, " ") != want {
		t.Errorf("choices %s\nwant     %s", strings.Join(seen, " "), want)
	}
	// The worker's config offers no other@*.service choices: it refuses,
	// whatever the API's config says.
	code, b = e.do("alice", "GET", "/v1/actions/restart-other/choices?host=ch-1", nil)
	wantError(t, code, b, 503, "unavailable")
	if !bytes.Contains(b, []byte("offers no unit choices")) {
		t.Errorf("refusal %s", b)
	}
	// No worker serves ch-2.
	code, b = e.do("alice", "GET", "/v1/actions/restart-example/choices?host=ch-2", nil)
	wantError(t, code, b, 503, "unavailable")
}

// TestActionChoicesValidAsARun: a choice is valid only when a run of it
// would be accepted. Its value must pass the param's rules, and the unit
// name it renders the check every run makes: systemd has units such as
// example@a..b.service and example@.x.service, whose values a pattern
// with dots allows but whose names a run refuses ("..", an instance that
// starts with a dot). They were listed valid, and their button refused.
func TestActionChoicesValidAsARun(t *testing.T) {
	dotted := config.Action{Name: "restart-dotted", Hosts: []string{"cv-*"}, Roles: []string{"ops"},
		Params:  []config.ActionParam{{Name: "id", Pattern: "[a-z0-9.]+", Units: "example@*.service"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"}}
	e := newAPIEnv(t, envOptions{hosts: []string{"cv-1"},
		actions:       config.Actions{Bus: "system", Definitions: []config.Action{dotted}},
		workerActions: config.Actions{Bus: "system", Definitions: []config.Action{dotted}},
		units: []systemd.Unit{
			{Name: "example@.x.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
			{Name: "example@0042.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
			{Name: "example@A.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
			{Name: "example@a..b.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
		}})
	code, b := e.do("alice", "GET", "/v1/actions/restart-dotted/choices?host=cv-1", nil)
	var got struct {
		Params map[string][]struct {
			Value string `json:"value"`
			Valid bool   `json:"valid"`
		} `json:"params"`
	}
	if code != 200 || json.Unmarshal(b, &got) != nil {
		t.Fatalf("choices: %d %s", code, b)
	}
	var seen []string
	for _, c := range got.Params["id"] {
		seen = append(seen, fmt.Sprintf("%s/%v", c.Value, c.Valid))
		if !c.Valid {
			// What the list says cannot be run is refused by the run.
			code, b := e.do("alice", "POST", "/v1/actions/restart-dotted/run", map[string]any{"host": "cv-1", "params": map[string]any{"id": c.Value}})
			wantError(t, code, b, 422, "unprocessable")
		}
	}
	if want := ".x/false 0042/true A/false a..b/false"; strings.Join(seen, " ") != want {
		t.Errorf("choices %s\nwant    %s", strings.Join(seen, " "), want)
	}
}

// TestActionRetryRacingItsFirstRunIsThatRun: two runs of a limited
// action with one Idempotency-Key, sent at once (a double submit, or a
// retry while the first is still being recorded), are one run answered
// to both. The limit's trigger looked the key up before it waited for the
// action's lock, so the second, which waited behind the first, found no
// key, counted the first's run and was refused 429 rate_limited although
// its request had been accepted; it looks the key up with the lock held
// now (migration 00021), and the insert has no second look-up after a
// refusal. The action's lock is held here while both wait for it, so the
// race is the same every time.
func TestActionRetryRacingItsFirstRunIsThatRun(t *testing.T) {
	one := config.Action{Name: "one-run", Hosts: []string{"*"}, Roles: []string{"ops"},
		Command: []string{"/bin/true"}, Limit: config.ActionLimit{Runs: 1, Per: time.Hour, ConcurrentPerHost: 1}}
	e := newAPIEnv(t, envOptions{actions: config.Actions{Bus: "system", Definitions: []config.Action{one}}})
	ctx := t.Context()
	if _, err := e.pool.Exec(ctx, `INSERT INTO action_locks (action) VALUES ('one-run') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM action_locks WHERE action = 'one-run' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		body []byte
	}
	answers := make(chan answer, 2)
	for range 2 {
		go func() {
			code, b := e.do("alice", "POST", "/v1/actions/one-run/run", map[string]any{"host": "race-1"}, "Idempotency-Key", "once")
			answers <- answer{code, b}
		}()
	}
	// Both inserts wait for the lock, before the trigger's key look-up.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO orders%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d inserts wait for the action's lock, want 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		a := <-answers
		var o api.Order
		if a.code != http.StatusAccepted || json.Unmarshal(a.body, &o) != nil {
			t.Fatalf("a run with the key: %d %s; want 202 with the one run", a.code, a.body)
		}
		ids = append(ids, o.ID.String())
	}
	if ids[0] != ids[1] {
		t.Fatalf("one key, two runs: %v", ids)
	}
}
