package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/testenv"
)

// maintenanceState is the answer of POST and DELETE
// /v1/hosts/{host}/maintenance.
type maintenanceState struct {
	Host        string               `json:"host"`
	Maintenance *api.HostMaintenance `json:"maintenance"`
	QueueDepth  int                  `json:"queue_depth"`
}

// setMaintenance puts host in maintenance (on) or takes it out, as admin.
func (e *apiEnv) setMaintenance(host string, on bool, reason string) maintenanceState {
	e.t.Helper()
	method, body := "DELETE", any(nil)
	if on {
		method, body = "POST", map[string]any{"reason": reason}
	}
	code, b := e.do("admin", method, "/v1/hosts/"+host+"/maintenance", body)
	if code != 200 {
		e.t.Fatalf("%s /v1/hosts/%s/maintenance: %d %s", method, host, code, b)
	}
	var st maintenanceState
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// wantMaintenanceRefusal checks a refusal's envelope: 409
// host_in_maintenance, naming the host and the reason.
func wantMaintenanceRefusal(t *testing.T, what string, code int, b []byte, host, reason string) {
	t.Helper()
	var eb api.ErrorBody
	if code != 409 || json.Unmarshal(b, &eb) != nil || eb.Error.Code != "host_in_maintenance" ||
		!strings.Contains(eb.Error.Message, "host "+host+" is in maintenance") || !strings.Contains(eb.Error.Message, reason) ||
		eb.Error.Details["host"] != host || eb.Error.Details["reason"] != reason {
		t.Fatalf("%s: %d %s, want 409 host_in_maintenance naming %s and %q", what, code, b, host, reason)
	}
}

// ordersOf counts the orders recorded for host.
func ordersOf(t *testing.T, e *apiEnv, host string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM orders WHERE host = $1`, host).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHostMaintenanceRefusesNewOrders puts a host in maintenance and
// submits to it every native way: REST with and without a wait, a
// fan-out, an action, a NATS submission. Each is refused before anything
// is queued, 409 host_in_maintenance with the reason, and audited; the
// order queued before is left alone, a keyed retry of it is answered with
// it, the host's view shows the state, and out of maintenance the host
// takes orders again. Another replica sees the switch within its refresh,
// and one started afterwards (a restart) at its first order.
func TestHostMaintenanceRefusesNewOrders(t *testing.T) {
	acts := config.Actions{Bus: "system", Definitions: []config.Action{hashAction}}
	e := newAPIEnv(t, envOptions{hosts: []string{"h1"}, actions: acts})
	const host, reason = "act-m1", "disk swap, back at 14:00"
	// A second replica that has already looked (its cache is loaded).
	other := newAPIEnv(t, envOptions{dsn: e.dsn, tokens: e.tokens, natsURL: e.natsURL, actions: acts})
	other.submit("alice", map[string]any{"host": "act-m2", "command": "true"}, "", 202)

	before := e.submit("alice", map[string]any{"host": host, "command": "true"}, "", 202, "Idempotency-Key", "before-1")

	// Only admin switches, either way: ops and auditor are refused.
	for _, who := range []string{"alice", "auditor"} {
		for _, method := range []string{"POST", "DELETE"} {
			code, b := e.do(who, method, "/v1/hosts/"+host+"/maintenance", map[string]any{"reason": "x"})
			wantError(t, code, b, 403, "forbidden")
		}
	}
	code, b := e.do("alice", "POST", "/v1/hosts/"+host+"/maintenance", map[string]any{"reason": "x"})
	wantError(t, code, b, 403, "forbidden")
	code, b = e.do("admin", "POST", "/v1/hosts/"+host+"/maintenance", map[string]any{"reason": "a\x00b"})
	wantError(t, code, b, 400, "invalid_request")
	code, b = e.do("admin", "POST", "/v1/hosts/bad..host/maintenance", nil)
	if code != 400 {
		t.Fatalf("a bad host name: %d %s, want 400", code, b)
	}

	st := e.setMaintenance(host, true, reason)
	if st.Maintenance == nil || st.Maintenance.Reason != reason || st.Maintenance.By != "admin" || st.QueueDepth != 1 {
		t.Fatalf("maintenance on: %+v, want the reason, by admin, 1 queued", st)
	}
	recorded := ordersOf(t, e, host)

	// REST, without and with a wait.
	code, b = e.do("alice", "POST", "/v1/orders", map[string]any{"host": host, "command": "true"})
	wantMaintenanceRefusal(t, "POST /v1/orders", code, b, host, reason)
	code, b = e.do("alice", "POST", "/v1/orders?wait=5", map[string]any{"host": host, "command": "true"})
	wantMaintenanceRefusal(t, "POST /v1/orders?wait=5", code, b, host, reason)
	// A fan-out: the host in maintenance refused, the other queued (200
	// when h1's order has already finished as the batch is read back).
	code, b = e.do("alice", "POST", "/v1/orders", map[string]any{"hosts": []string{"h1", host}, "command": "true"})
	if (code != 202 && code != 200) || !strings.Contains(string(b), `"host":"`+host+`","error":{"code":"host_in_maintenance"`) {
		t.Fatalf("fan-out over h1 and %s: %d %s, want 202 (or 200) with %s refused host_in_maintenance", host, code, b, host)
	}
	// An action.
	code, b = e.do("alice", "POST", "/v1/actions/hash-secret/run", map[string]any{"host": host, "params": map[string]any{"label": "x", "pw": "s3cretpassw0rd"}})
	wantMaintenanceRefusal(t, "an action", code, b, host, reason)
	// NATS: the intake's answer carries the same code.
	a := e.publish("alice", host, "nats-m1", map[string]any{"command": "true"})
	if a.Order != nil || a.Error == nil || a.Error.Code != "host_in_maintenance" || !strings.Contains(a.Error.Message, reason) {
		t.Fatalf("NATS submission: %+v, want refused host_in_maintenance", a)
	}
	// A keyed retry of the order accepted before is answered with it.
	if again := e.submit("alice", map[string]any{"host": host, "command": "true"}, "", 202, "Idempotency-Key", "before-1"); again.ID != before.ID {
		t.Fatalf("the retry of an order accepted before the maintenance: %s, want %s", again.ID, before.ID)
	}
	if n := ordersOf(t, e, host); n != recorded {
		t.Fatalf("%d orders recorded for %s during its maintenance, want none", n-recorded, host)
	}

	// The order queued before is left alone.
	code, b = e.do("alice", "GET", "/v1/orders/"+before.ID.String(), nil)
	if code != 200 || !strings.Contains(string(b), `"status":"queued"`) {
		t.Fatalf("the order queued before: %d %s, want it still queued", code, b)
	}
	// Each refusal is audited with its code (the fan-out's and the
	// NATS one included).
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM rejections WHERE code = 'host_in_maintenance' AND reason LIKE '%' || $1 || '%'`, reason).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refusals audited with host_in_maintenance, want 5", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// docs/sql.md's query of the refusals meanwhile finds each by its
	// host, the fan-out's too (hB14: its row's request.host was "").
	var byHost int
	if err := e.pool.QueryRow(testenv.Context(t), `SELECT count(*) FROM rejections WHERE code = 'host_in_maintenance' AND request->>'host' = $1`, host).Scan(&byHost); err != nil {
		t.Fatal(err)
	}
	if byHost != 5 {
		t.Errorf("%d refusals found by sql.md's query (request->>'host' = %q), want 5 (REST twice, the fan-out's host, the action, NATS)", byHost, host)
	}

	// The host's view and the list show it.
	for _, path := range []string{"/v1/hosts/" + host, "/v1/hosts"} {
		code, b = e.do("alice", "GET", path, nil)
		if code != 200 || !strings.Contains(string(b), `"maintenance":{"reason":"`+reason+`"`) {
			t.Fatalf("GET %s: %d %s, want the host's maintenance", path, code, b)
		}
	}

	// The other replica refuses within its refresh; one started now at
	// its first order.
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, b = other.do("alice", "POST", "/v1/orders", map[string]any{"host": host, "command": "true"})
		if code == 409 {
			wantMaintenanceRefusal(t, "the other replica", code, b, host, reason)
			break
		}
		if code != 202 || time.Now().After(deadline) {
			t.Fatalf("the other replica: %d %s, want 409 within a few seconds", code, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	restarted := newAPIEnv(t, envOptions{dsn: e.dsn, tokens: e.tokens, natsURL: e.natsURL})
	code, b = restarted.do("alice", "POST", "/v1/orders", map[string]any{"host": host, "command": "true"})
	wantMaintenanceRefusal(t, "a replica started during the maintenance", code, b, host, reason)

	// Out of maintenance: accepted again, and the view no longer says it.
	if st := e.setMaintenance(host, false, ""); st.Maintenance != nil {
		t.Fatalf("maintenance off: %+v", st)
	}
	e.submit("alice", map[string]any{"host": host, "command": "true"}, "", 202)
	code, b = e.do("alice", "GET", "/v1/hosts/"+host, nil)
	if code != 200 || strings.Contains(string(b), `"maintenance"`) {
		t.Fatalf("GET /v1/hosts/%s after: %d %s", host, code, b)
	}
	// Taking it out again is answered the same.
	e.setMaintenance(host, false, "")
	// Who switched, both ways, is on record (host_maintenance_log,
	// docs/sql.md); the refused switches and the second off are not.
	rows, _ := e.pool.Query(testenv.Context(t), `SELECT action || ' ' || by || ' ' || reason FROM host_maintenance_log WHERE host = $1 ORDER BY id`, host)
	log, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(log, []string{"on admin " + reason, "off admin " + reason}) {
		t.Fatalf("host_maintenance_log of %s: %q, %v; want on and off by admin", host, log, err)
	}
}

// TestHostMaintenanceRefusesCompatOrders: with the compat surfaces' host
// in maintenance, httpexec's exec, a Vigrid execute (synchronous and
// not), a stage0 execute and a native runbook execute are refused in
// their tool's shape with 409 and the reason, and none records an order.
func TestHostMaintenanceRefusesCompatOrders(t *testing.T) {
	hx := newHTTPExecSurface(t, envOptions{})
	e := hx.apiEnv
	vigridURL := startVigrid(t, e)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "M.md"), []byte(stage0Runbook("M", "{}", "", "echo hi")), 0o644); err != nil {
		t.Fatal(err)
	}
	rb := e.stage0Server(dir)
	const reason = "kernel upgrade"
	e.setMaintenance("h1", true, reason)
	recorded := ordersOf(t, e, "h1")

	post := func(url, token, body string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	want := func(what string, code int, ctype, body string, wantType string, shape func(string) bool) {
		t.Helper()
		if code != 409 || !strings.HasPrefix(ctype, wantType) || !strings.Contains(body, "host h1 is in maintenance") ||
			!strings.Contains(body, reason) || !shape(body) {
			t.Errorf("%s: %d %s %q, want 409 %s naming the maintenance", what, code, ctype, body, wantType)
		}
	}
	jsonKeys := func(keys ...string) func(string) bool {
		return func(b string) bool {
			var m map[string]any
			if json.Unmarshal([]byte(b), &m) != nil || len(m) != len(keys) {
				return false
			}
			for _, k := range keys {
				if _, ok := m[k]; !ok {
					return false
				}
			}
			return true
		}
	}

	// httpexec: its plain-text refusal, the message on one line.
	code, ctype, body := post(hx.url+"/echo", "", `{"args":["x"]}`)
	want("httpexec", code, ctype, body, "text/plain", func(b string) bool { return strings.Count(b, "\n") == 1 && strings.HasSuffix(b, "\n") })
	// Vigrid: {"status": "error", "message": …}, synchronous or not.
	for _, sync := range []string{"true", "false"} {
		code, ctype, body = post(vigridURL+"/api/v1/execute", e.tokens["alice"], `{"command":"echo","arguments":["x"],"synchronous":`+sync+`}`)
		want("vigrid synchronous="+sync, code, ctype, body, "application/json", jsonKeys("status", "message"))
	}
	// stage0: {"success": false, "error": …}, before any stream.
	code, b := rb.do("", "POST", "/dev-login", map[string]any{"subject": "boss", "roles": []string{"admin"}})
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &login); code != http.StatusOK || err != nil {
		t.Fatalf("dev-login: %d %s", code, b)
	}
	code, ctype, body = post(rb.url+"/api/runbooks/M.md/execute", login.AccessToken, `{}`)
	want("stage0 execute", code, ctype, body, "application/json", jsonKeys("success", "error"))
	// The native runbook route: the envelope.
	code, b = rb.do("alice", "POST", "/v1/runbooks/M.md/execute", map[string]any{"host": "h1"})
	wantMaintenanceRefusal(t, "POST /v1/runbooks/M.md/execute", code, b, "h1", reason)

	if n := ordersOf(t, e, "h1"); n != recorded {
		t.Errorf("%d orders recorded for h1 during its maintenance, want none", n-recorded)
	}
	// Out of maintenance, httpexec runs again.
	e.setMaintenance("h1", false, "")
	if code, _, body := post(hx.url+"/echo", "", `{"args":["x"]}`); code != 200 {
		t.Errorf("httpexec after the maintenance: %d %q", code, body)
	}
}

// maintenanceReads counts the intake's reads of the hosts in maintenance
// and its inserts.
type maintenanceReads struct {
	intake.Store
	reads, inserts *atomic.Int64
}

func (m maintenanceReads) HostsInMaintenance(ctx context.Context) (map[string]postgres.Maintenance, error) {
	m.reads.Add(1)
	return m.Store.HostsInMaintenance(ctx)
}

func (m maintenanceReads) InsertOrder(ctx context.Context, o *order.Order) (*order.Order, error) {
	m.inserts.Add(1)
	return m.Store.InsertOrder(ctx, o)
}

// TestHostMaintenanceCostsTheSubmitNothing counts what the maintenance
// check costs an order: no statement. On an API whose intake does not
// refresh each second (its loops do not run), the switch reads the hosts
// in maintenance once; then 40 orders accepted and 40 refused read them
// not once more, and the refused ones insert nothing.
func TestHostMaintenanceCostsTheSubmitNothing(t *testing.T) {
	var reads, inserts atomic.Int64
	made := 0
	e := newAPIEnv(t, envOptions{intakeStore: func(s intake.Store) intake.Store {
		if made++; made == 1 {
			return s // the env's own intake, which refreshes each second
		}
		return maintenanceReads{Store: s, reads: &reads, inserts: &inserts}
	}})
	srv := e.runbookAPI(config.Rule{Name: "all", Roles: []string{"ops", "admin"}, Hosts: []string{"*"}, Allow: []string{".*"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return config.Runbooks{} })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	r := *e
	r.url = hs.URL

	r.setMaintenance("cost-m", true, "counted")
	if n := reads.Load(); n != 1 {
		t.Fatalf("the switch read the hosts in maintenance %d times, want 1", n)
	}
	const n = 40
	for range n {
		r.submit("alice", map[string]any{"host": "cost-h", "command": "true"}, "", 202)
		code, b := r.do("alice", "POST", "/v1/orders", map[string]any{"host": "cost-m", "command": "true"})
		wantMaintenanceRefusal(t, "cost-m", code, b, "cost-m", "counted")
	}
	if rd, ins := reads.Load()-1, inserts.Load(); rd != 0 || ins != n {
		t.Fatalf("%d orders accepted and %d refused: %d reads of the hosts in maintenance, %d inserts; want 0 and %d", n, n, rd, ins, n)
	}
	t.Logf("%d orders accepted, %d refused: 0 reads of host_maintenance, %d inserts", n, n, n)
}

// TestUIHostsPageShowsMaintenance: the hosts page marks a host in
// maintenance (one no worker ever served included), with who, since when
// and why in the badge's title, and as text beside it: a title shows only
// under a mouse, never on a phone (the UI's) nor from the keyboard, so
// the reason was out of an operator's reach there.
func TestUIHostsPageShowsMaintenance(t *testing.T) {
	e := newUIEnv(t)
	sess, _ := e.uiSession(t, "alice")
	if _, err := e.store.StartMaintenance(t.Context(), "ui-m1", new("disk <swap>"), "boss"); err != nil {
		t.Fatal(err)
	}
	page := e.page(t, sess, "/ui/hosts")
	row := regexp.MustCompile(`(?s)<td>ui-m1</td>.*?</tr>`).FindString(page)
	if !strings.Contains(row, `>maintenance</span>`) || !strings.Contains(row, `by boss since `) || !strings.Contains(row, `: disk &lt;swap&gt;"`) {
		t.Fatalf("the host's row shows no maintenance:\n%s", row)
	}
	if !strings.Contains(row, `<span class="hint maintenance">by boss since <time datetime="`) || !strings.Contains(row, ` UTC</time>: disk &lt;swap&gt;</span>`) {
		t.Fatalf("the host's row does not show who put it in maintenance and why, outside the badge's title:\n%s", row)
	}
}

// TestForgetAHostInMaintenance: forgetting a host in maintenance answered
// 204 and left it listed, with its maintenance, its new orders refused;
// forgetting it again said it was listed only for its maintenance. Now
// the forget is refused, 409 conflict naming the maintenance and how to
// end it, and nothing is forgotten; taken out of maintenance, the host is
// forgotten as any other (hB14).
func TestForgetAHostInMaintenance(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	ctx := testenv.Context(t)
	// What a stopped worker of "retired-m" left: its row in PostgreSQL.
	if err := e.store.TouchHost(ctx, "retired-m", "1.0", "retired-m/1"); err != nil {
		t.Fatal(err)
	}
	e.setMaintenance("retired-m", true, "decommissioned")
	for _, path := range []string{"/v1/hosts/retired-m", "/v1/hosts/retired-m?abandon=true"} {
		code, b := e.do("admin", "DELETE", path, nil)
		wantError(t, code, b, 409, "conflict")
		var eb api.ErrorBody
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Details["maintenance"] == nil ||
			!strings.Contains(eb.Error.Message, "host retired-m is in maintenance (by admin since ") ||
			!strings.Contains(eb.Error.Message, "orderly hosts retired-m --maintenance off), then forget it") {
			t.Fatalf("DELETE %s of a host in maintenance: %s, want the maintenance named and how to end it", path, b)
		}
	}
	var rows int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM hosts WHERE host = 'retired-m'`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("the refused forget left %d rows of retired-m in hosts (%v), want 1", rows, err)
	}
	code, b := e.do("alice", "POST", "/v1/orders", map[string]any{"host": "retired-m", "command": "true"})
	wantMaintenanceRefusal(t, "an order for the host", code, b, "retired-m", "decommissioned")

	e.setMaintenance("retired-m", false, "")
	if code, b := e.do("admin", "DELETE", "/v1/hosts/retired-m", nil); code != http.StatusNoContent {
		t.Fatalf("forget once out of maintenance: %d %s, want 204", code, b)
	}
	if code, b = e.do("admin", "GET", "/v1/hosts", nil); strings.Contains(string(b), `"retired-m"`) {
		t.Fatalf("the list after: %s, want retired-m gone", b)
	}
}

// TestMaintenanceOnAgainKeepsItsReason: a second `on` without a reason
// (orderly hosts web-2 --maintenance on, POST with no body) cleared the
// reason recorded and added a log row. Now no reason, {} or a null one
// keep the reason and the start, and log nothing; the same reason again
// logs nothing; an empty reason clears it, logged (hB14).
func TestMaintenanceOnAgainKeepsItsReason(t *testing.T) {
	e := newAPIEnv(t, envOptions{})
	const host = "keep-m1"
	first := e.setMaintenance(host, true, "disk swap")
	for _, body := range []any{nil, map[string]any{}, map[string]any{"reason": nil}, map[string]any{"reason": "disk swap"}} {
		code, b := e.do("admin", "POST", "/v1/hosts/"+host+"/maintenance", body)
		var st maintenanceState
		if code != 200 || json.Unmarshal(b, &st) != nil || st.Maintenance == nil || st.Maintenance.Reason != "disk swap" ||
			!st.Maintenance.Since.Equal(first.Maintenance.Since) {
			t.Fatalf("on again with %v: %d %s, want the reason and since %v kept", body, code, b, first.Maintenance.Since)
		}
	}
	code, b := e.do("admin", "GET", "/v1/hosts/"+host, nil)
	if code != 200 || !strings.Contains(string(b), `"maintenance":{"reason":"disk swap"`) {
		t.Fatalf("GET /v1/hosts/%s: %d %s, want the reason kept", host, code, b)
	}
	if st := e.setMaintenance(host, true, ""); st.Maintenance == nil || st.Maintenance.Reason != "" {
		t.Fatalf("on again with an empty reason: %+v, want it cleared", st)
	}
	rows, _ := e.pool.Query(testenv.Context(t), `SELECT action || ' ' || reason FROM host_maintenance_log WHERE host = $1 ORDER BY id`, host)
	log, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(log, []string{"on disk swap", "on "}) {
		t.Fatalf("host_maintenance_log of %s: %q, %v; want the first on and the one that cleared the reason", host, log, err)
	}
}
