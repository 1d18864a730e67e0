package api_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// logLines returns the JSON log lines of logs whose msg is msg.
func logLines(t *testing.T, logs *testenv.LogBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Bytes())
		}
		if line["msg"] == msg {
			out = append(out, line)
		}
	}
	return out
}

// TestRefusedRunbookRunIsLogged checks that a runbook run refused for its
// Required Claims, which is recorded as a rejected order, has its "order
// rejected" line with that order's id and principal (docs/observability.md:
// one line per order state change), so the log and the history agree; and
// that the order counters count it as the orders table does, submitted
// and finished as rejected.
func TestRefusedRunbookRunIsLogged(t *testing.T) {
	logs := &testenv.LogBuffer{}
	m := metrics.New()
	e := newAPIEnv(t, envOptions{logger: slog.New(slog.NewJSONHandler(logs, nil)), metrics: m})
	dir := t.TempDir()
	doc := "# Guarded\n\n# Environment Requirements\n```yaml\n```\n\n# File System Requirements\n```yaml\nInput:\n  []\n```\n\n" +
		"# Required Claims\n```yaml\nroles: admin\n```\n\n# Script\n```sh\necho ok\n```\n\n# History\n"
	if err := os.WriteFile(filepath.Join(dir, "Guarded.md"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default().Runbooks
	cfg.Dir, cfg.Host = dir, "rb-1"
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	rb := *e
	rb.url = hs.URL

	code, b := rb.do("alice", "POST", "/v1/runbooks/Guarded.md/execute", map[string]any{})
	if code != 403 {
		t.Fatalf("execute without the claims: %d %s", code, b)
	}
	id, _ := decodeAs[api.ErrorBody](t, b).Error.Details["order_id"].(string)
	var status string
	if err := e.pool.QueryRow(t.Context(), `SELECT status FROM orders WHERE id = $1`, id).Scan(&status); err != nil || status != "rejected" {
		t.Fatalf("the refused run %s is not a rejected order: %q %v", id, status, err)
	}
	var found bool
	for _, l := range logLines(t, logs, "order rejected") {
		if l["order_id"] == id {
			found = true
			if l["principal"] != "alice" || l["host"] != "rb-1" || l["code"] != "forbidden" || l["source"] != "rest" ||
				!strings.Contains(l["reason"].(string), "RBAC check failed") {
				t.Errorf("order rejected line: %v", l)
			}
		}
	}
	if !found {
		t.Errorf("no \"order rejected\" line for the rejected order %s:\n%s", id, logs.String())
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`orderly_orders_submitted_total{source="rest"} 1`,
		`orderly_orders_finished_total{host="rb-1",status="rejected"} 1`,
		`orderly_rejections_total{code="forbidden"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestRefusedNATSSubmissionIsFindable checks that a publisher's refused
// submission can be found by the one name the publisher knows it by, its
// Nats-Msg-Id: in the rejections row and in the "order rejected" line,
// whose order id is one the publisher never saw.
func TestRefusedNATSSubmissionIsFindable(t *testing.T) {
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{logger: slog.New(slog.NewJSONHandler(logs, nil))})
	// No policy rule names the auditor role: every command is refused.
	a := e.publish("auditor", "nats-1", "publisher-7-msg-42", map[string]any{"command": "uptime"})
	if a.Error == nil || a.Error.Code != "forbidden" {
		t.Fatalf("answer %+v, want forbidden", a)
	}
	var principal, host string
	if err := e.pool.QueryRow(t.Context(), `SELECT principal, request->>'host' FROM rejections
		WHERE source = 'nats' AND request->>'nats_msg_id' = 'publisher-7-msg-42'`).Scan(&principal, &host); err != nil {
		t.Fatalf("no rejections row names the Nats-Msg-Id: %v", err)
	}
	if principal != "auditor" || host != "nats-1" {
		t.Errorf("rejections row: principal %q host %q, want auditor nats-1", principal, host)
	}
	testenv.WaitUntil(t, 20*time.Second, "the order rejected line", func() bool {
		for _, l := range logLines(t, logs, "order rejected") {
			if l["idempotency_key"] == "publisher-7-msg-42" && l["principal"] == "auditor" && l["source"] == "nats" {
				return true
			}
		}
		return false
	})
}

// TestLostOrderCancelIsLogged checks that an order ended because its
// message left the orders stream has its line with whose order it was
// (docs/observability.md: every state change line names the principal).
func TestLostOrderCancelIsLogged(t *testing.T) {
	logs := &testenv.LogBuffer{}
	e := newAPIEnv(t, envOptions{lost: 300 * time.Millisecond, logger: slog.New(slog.NewJSONHandler(logs, nil))})
	o := e.submit("alice", map[string]any{"host": "h-lost", "command": "true"}, "", 202)
	st, err := e.q.JetStream().Stream(t.Context(), queue.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context(), jetstream.WithPurgeSubject(queue.OrdersSubject+"h-lost")); err != nil {
		t.Fatal(err)
	}
	e.waitOrder(o.ID, "canceled")
	testenv.WaitUntil(t, 20*time.Second, "the lost order's line", func() bool {
		for _, l := range logLines(t, logs, "order canceled: its message is gone from the orders stream") {
			if l["order_id"] == o.ID.String() {
				if l["principal"] != "alice" || l["host"] != "h-lost" || l["actor"] != "orderly" {
					t.Fatalf("line: %v", l)
				}
				return true
			}
		}
		return false
	})
}
