package client_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// server is a real orderly API for the client to talk to: PostgreSQL and
// NATS from internal/testenv, the API wired as `orderly api` wires it,
// and a real worker for each host asked for. alice and bob (role ops) may
// run anything and read their own orders.
type server struct {
	url    string
	tokens map[string]string
	q      *queue.Queue
}

func newServer(t *testing.T, hosts ...string) *server {
	t.Helper()
	return newServerWith(t, api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second}, hosts...)
}

// newServerWith is newServer with the API's settings (its limits).
func newServerWith(t *testing.T, settings api.Settings, hosts ...string) *server {
	t.Helper()
	store, _ := testenv.Store(t, testenv.Postgres(t))
	q := testenv.Queue(t, testenv.NATS(t), "client-test", queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second})
	s := &server{tokens: map[string]string{}, q: q}
	var cfg config.Auth
	for _, name := range []string{"alice", "bob"} {
		tok, sum := auth.NewToken()
		s.tokens[name] = tok
		cfg.Tokens = append(cfg.Tokens, config.Token{Name: name, SHA256: sum, Roles: []string{"ops"}})
	}
	authn, err := auth.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New([]config.Rule{{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}}})
	if err != nil {
		t.Fatal(err)
	}
	logger := testenv.Logger(t)
	// One action and one runbook, for the clients of /v1/actions and
	// /v1/runbooks.
	acts, err := action.New(config.Actions{Bus: "system", Definitions: []config.Action{{Name: "count", Hosts: []string{"*"},
		Roles: []string{"ops"}, Params: []config.ActionParam{{Name: "n", Type: "int"}}, Command: []string{"/bin/echo", "{n}"}}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rb := "# Deploy\n\n# Environment Requirements\n```yaml\nVERSION: the release\n```\n\n" +
		"# File System Requirements\n```yaml\nInput:\n  []\n```\n\n# Script\n```sh\necho deploying $VERSION\n```\n\n# History\n"
	if err := os.WriteFile(filepath.Join(dir, "Deploy.md"), []byte(rb), 0o644); err != nil {
		t.Fatal(err)
	}
	rbCfg := config.Default().Runbooks
	rbCfg.Dir = dir
	in := intake.New(store, q, func() intake.Authorizer { return pol },
		intake.Options{Actions: func() intake.ActionAuthorizer { return acts }}, logger)
	srv := api.New(api.Deps{
		Store: store, Queue: q, Intake: in, Logger: logger, Version: "test",
		Auth:     func() api.Authenticator { return authn },
		Settings: func() api.Settings { return settings },
		Actions:  &api.ActionDeps{Set: func() *action.Set { return acts }},
		Runbooks: &api.RunbookDeps{Store: store, Config: func() config.Runbooks { return rbCfg }},
	})
	hs := httptest.NewServer(srv.Handler())
	s.url = hs.URL
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { in.Run(runCtx) })
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		stop()
		wg.Wait()
	})
	for _, h := range hosts {
		hp, err := hostpolicy.New(config.Default().Worker)
		if err != nil {
			t.Fatal(err)
		}
		w := worker.New(worker.Options{Host: h, Heartbeat: 200 * time.Millisecond, AckWait: 2 * time.Second,
			ShutdownGrace: 5 * time.Second}, store, q, hp, executor.New(logger), logger)
		wctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker %s: %v", h, err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("worker %s did not stop", h)
			}
		})
	}
	return s
}
