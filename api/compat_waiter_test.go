package api_test

import (
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

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestCompatWaitersBindTheirOrders: a synchronous Vigrid execute and a
// stage0 execute bind their orders to the API process their clients wait
// on, as httpexec does (TestCompatOrderOfAKilledAPIIsCanceled kills that
// process); an asynchronous Vigrid execute, whose client holds its id,
// does not. Once the process's presence is gone, the worker cancels the
// bound orders at their claim, never starting them, and runs the other.
func TestCompatWaitersBindTheirOrders(t *testing.T) {
	e := newAPIEnv(t, envOptions{hosts: []string{}}) // h1 has no worker yet
	ctx := testenv.Context(t)
	presence := api.NewPresence(e.store, e.logger())
	pctx, end := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); presence.Run(pctx) }()
	t.Cleanup(func() { end(); <-ran })
	testenv.WaitUntil(t, 20*time.Second, "the presence is renewed", func() bool {
		var o order.Order
		presence.Bind(&o)
		return o.Waiter == presence.Instance()
	})

	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cfg.Compat.Vigrid.Enabled, cfg.Compat.Vigrid.Prefix, cfg.Compat.Vigrid.Host = true, "/api/v1", "h1"
	cfg.Compat.Vigrid.MaxWait = time.Minute
	rule := config.Rule{Name: "vigrid", Roles: []string{"ops", "admin"}, Hosts: []string{"h1"}, Allow: []string{`^echo( |$)`}}
	srv := e.runbookAPI(rule, func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return cfg.Runbooks })
	srv.Presence = presence
	authn := authenticator(t, e.tokens, "")
	srv.MountCompat(api.CompatSurface{Prefix: "/api/v1", Handler: &compat.Vigrid{Deps: compat.Deps{Orders: srv,
		Config: func() config.Config { return cfg }, ACL: func() *netacl.ACL { return nil }, Auth: func() compat.Authenticator { return authn },
		Authorize: ruleAuthorizer(t, rule, cfg)},
		PID: func(context.Context, uuid.UUID, int) int { return 0 }}})
	vs := httptest.NewServer(srv.Handler())
	t.Cleanup(vs.Close)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Hello.md"), []byte(stage0Runbook("Hello", "{}", "", "echo hello")), 0o644); err != nil {
		t.Fatal(err)
	}
	s0, token := startStage0(t, e, dir, func(s *api.Server) { s.Presence = presence })

	post := func(url, auth, body string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		req.Header.Set("Authorization", "Bearer "+auth)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	answers := make(chan string, 2)
	go func() {
		code, b := post(vs.URL+"/api/v1/execute", e.tokens["alice"], `{"command":"echo","arguments":["sync"],"synchronous":true}`)
		answers <- "vigrid: " + http.StatusText(code) + " " + b
	}()
	go func() {
		code, b := post(s0+"/api/runbooks/Hello.md/execute", token, `{}`)
		answers <- "stage0: " + http.StatusText(code) + " " + b
	}()
	code, b := post(vs.URL+"/api/v1/execute", e.tokens["alice"], `{"command":"echo","arguments":["async"]}`)
	if code != http.StatusAccepted {
		t.Fatalf("async execute: %d %s", code, b)
	}
	var async struct {
		OrderID uuid.UUID `json:"order_id"`
	}
	if err := json.Unmarshal([]byte(b), &async); err != nil {
		t.Fatal(err)
	}

	// waiters are the recorded orders' waiters, by command line.
	type row struct {
		id     uuid.UUID
		waiter *uuid.UUID
		status string
	}
	orders := func() map[string]row {
		rows, err := e.pool.Query(ctx, `SELECT id, source || ' ' || command || ' ' || array_to_string(args, ' '), waiter, status FROM orders`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]row{}
		for rows.Next() {
			var r row
			var line string
			if err := rows.Scan(&r.id, &line, &r.waiter, &r.status); err != nil {
				t.Fatal(err)
			}
			m[strings.TrimSpace(line)] = r
		}
		return m
	}
	var got map[string]row
	testenv.WaitUntil(t, 20*time.Second, "three orders recorded", func() bool { got = orders(); return len(got) == 3 })
	sync, async2 := got["vigrid echo sync"], got["vigrid echo async"]
	var stage0 row
	for line, r := range got {
		if strings.HasPrefix(line, "stage0 ") {
			stage0 = r
		}
	}
	if async2.id != async.OrderID {
		t.Fatalf("orders recorded: %+v", got)
	}
	for name, r := range map[string]row{"synchronous Vigrid": sync, "stage0": stage0} {
		if r.waiter == nil || *r.waiter != presence.Instance() {
			t.Errorf("the %s execute's order names waiter %v, want the API's presence %s", name, r.waiter, presence.Instance())
		}
	}
	if async2.waiter != nil {
		t.Errorf("the asynchronous Vigrid execute's order names waiter %v, want none: its client holds its id", *async2.waiter)
	}

	// The API's presence ends (as its process's death makes it lapse);
	// then a worker comes.
	end()
	<-ran
	e.startWorker("h1")
	testenv.WaitUntil(t, 30*time.Second, "the three orders end", func() bool {
		for _, r := range orders() {
			if r.status == "queued" || r.status == "running" {
				return false
			}
		}
		return true
	})
	if st := orders()["vigrid echo async"].status; st != "succeeded" {
		t.Errorf("the asynchronous Vigrid order: %s, want succeeded", st)
	}
	for name, r := range map[string]row{"synchronous Vigrid": sync, "stage0": stage0} {
		var st string
		var started bool
		if err := e.pool.QueryRow(ctx, `SELECT status, started_at IS NOT NULL FROM orders WHERE id = $1`, r.id).Scan(&st, &started); err != nil {
			t.Fatal(err)
		}
		if st != "canceled" || started {
			t.Errorf("the %s order of a gone waiter: %s (started %t), want canceled, never started", name, st, started)
		}
	}
	for range 2 {
		t.Logf("a client still waiting on an API whose presence lapsed: %s", <-answers)
	}
}
