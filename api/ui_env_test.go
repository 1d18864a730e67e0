package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

// uiEnv is the API with the web UI, on real PostgreSQL and NATS, with one
// action and a real worker for host web-1 that knows the same action
// from its own config. alice (role ops) may run the action and any
// command; carol (role viewer) may run nothing; dave (role greeter) may
// run greet only, so his dashboard asks for no unit choices; audra (role
// auditor) reads every order and may run nothing.
type uiEnv struct {
	t       *testing.T
	url     string
	handler http.Handler
	store   *postgres.Store
	pool    *pgxpool.Pool
	// apiStore is the store as the API reads it: it counts the output
	// bytes the API read.
	apiStore *outputCounter
	q        *queue.Queue
	tokens   map[string]string
	// rbDir is the runbooks' directory.
	rbDir string
	// ratePerPrincipal is the API's per-principal rate limit (0: off).
	ratePerPrincipal atomic.Int64
	// acl is the API's network ACL (nil: none).
	acl atomic.Pointer[netacl.ACL]
	// maxStreams is the API's limit of event streams per principal (0: none).
	maxStreams atomic.Int64
	// srv is the test server the browser talks to.
	srv *httptest.Server
	// failPublish makes the intake's publish of an order fail, as with
	// NATS unavailable: the order is recorded, not queued.
	failPublish atomic.Bool
	// actions are the API's actions (uiActions); a test may store others,
	// as a reload does (the worker keeps uiActions).
	actions atomic.Pointer[action.Set]
	// noRunbookHost empties the API's runbooks.host ("web-1"), as on an
	// orderly api whose config names none.
	noRunbookHost atomic.Bool
}

// uiJWTSecret signs the JWTs uiEnv accepts (HS256).
const uiJWTSecret = "ui-test-jwt-secret-0123456789abcdef0123456789"

// greetGates is where greet looks for a hold on its lines: a run whose
// who has a hold file (holdGreet) prints each next line only once the
// test lets it go, so a page watching them arrive does not depend on
// the machine's speed; every other run sleeps a second a line. One per
// test process: the API's and the worker's configs name the same path.
var greetGates = filepath.Join(os.TempDir(), fmt.Sprintf("orderly-greet-%d", os.Getpid()))

// holdGreet holds greet's runs for who until the returned func lets
// line i go; the hold ends with the test (or the func's 0).
func holdGreet(t *testing.T, who string) func(line int) {
	t.Helper()
	if err := os.MkdirAll(greetGates, 0o755); err != nil {
		t.Fatal(err)
	}
	hold := filepath.Join(greetGates, "hold-"+who)
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	release := func(line int) {
		if line == 0 {
			for _, f := range []string{hold, filepath.Join(greetGates, "go-"+who+"-1"), filepath.Join(greetGates, "go-"+who+"-2"), filepath.Join(greetGates, "go-"+who+"-3")} {
				_ = os.Remove(f)
			}
			return
		}
		if err := os.WriteFile(filepath.Join(greetGates, fmt.Sprintf("go-%s-%d", who, line)), nil, 0o644); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { release(0) })
	return release
}

// uiActionsBus is the D-Bus of uiActions' systemd verbs: "user" for a
// test run beside a real user manager (ui_job_browser_test.go).
var uiActionsBus = "system"

// uiActions is the config both the API and the worker load: greet prints
// three lines a second apart (or as a test lets them go: holdGreet), so
// a page can watch them arrive.
func uiActions() config.Actions {
	maxLen := int64(10)
	return config.Actions{Bus: uiActionsBus, Definitions: []config.Action{{
		Name: "greet", Title: "Greet", Description: "Prints three greetings, a second apart.",
		Command: []string{"sh", "-c", `for i in 1 2 3; do printf '\033[32mhello\033[0m %s %s\n' "$1" "$i"; ` +
			`if [ -e "$2/hold-$1" ]; then while [ ! -e "$2/go-$1-$i" ]; do sleep 0.05; done; else sleep 1; fi; done`, "greet", "{who}", greetGates},
		Params: []config.ActionParam{{Name: "who", Title: "Who", Description: "Lower-case letters, <i>not</i> markup.", Pattern: "^[a-z]+$", Max: &maxLen}},
		Roles:  []string{"ops", "greeter"}, Hosts: []string{"web-*"}, Confirm: true, Timeout: 30 * time.Second,
	}, {
		// unlock takes a secret, passed only in the environment.
		Name: "unlock", Title: "Unlock",
		Command: []string{"sh", "-c", `echo "unlocking $1 with $(expr length "$PIN") digits"`, "unlock", "{door}"},
		Env:     []config.ActionEnv{{Name: "PIN", Value: "{pin}"}},
		Params: []config.ActionParam{{Name: "door", Type: "enum", Values: []string{"front", "back"}},
			{Name: "pin", Pattern: "^[0-9]{4}$", Secret: true}},
		Roles: []string{"ops"}, Hosts: []string{"web-*"}, Timeout: 30 * time.Second,
	}, {
		// vault's secrets are a choice and checkboxes, one ticked by
		// default.
		Name: "vault", Title: "Vault",
		Command: []string{"sh", "-c", `echo "vault $VAULT_ROOM $VAULT_ALARM $VAULT_LOCK"`},
		Env: []config.ActionEnv{{Name: "VAULT_ROOM", Value: "{room}"}, {Name: "VAULT_ALARM", Value: "{alarm}"},
			{Name: "VAULT_LOCK", Value: "{lock}"}},
		Params: []config.ActionParam{{Name: "room", Type: "enum", Values: []string{"gold", "silver"}, Secret: true},
			{Name: "alarm", Type: "bool", Secret: true}, {Name: "lock", Type: "bool", Secret: true, Default: ptrTo("true")}},
		Roles: []string{"ops"}, Hosts: []string{"web-*"}, Timeout: 30 * time.Second,
	}, {
		// restart takes its choices from the host's units.
		Name: "restart", Title: "Restart an instance",
		Params:  []config.ActionParam{{Name: "id", Pattern: "^[0-9]{4}$", Units: "example@*.service"}},
		Systemd: config.ActionSystemd{Verb: "restart", Unit: "example@{id}.service"},
		Roles:   []string{"ops"}, Hosts: []string{"web-*"}, Confirm: true, Timeout: 30 * time.Second,
	}, {
		// tag's pattern is RE2 that a browser reads otherwise.
		Name: "tag", Title: "Tag",
		Command: []string{"echo", "tagged", "{n}"},
		Params:  []config.ActionParam{{Name: "n", Pattern: "[[:digit:]]{4}"}},
		Roles:   []string{"ops"}, Hosts: []string{"web-*"}, Timeout: 30 * time.Second,
	}, {
		// note's text is required and may be empty; its tag has a default.
		Name: "note", Title: "Note",
		Command: []string{"echo", "noted[{text}]", "{tag}"},
		Params:  []config.ActionParam{{Name: "text", Pattern: "[a-z ]*"}, {Name: "tag", Pattern: "[a-z]+", Default: ptrTo("misc")}},
		Roles:   []string{"ops"}, Hosts: []string{"web-*"}, Timeout: 30 * time.Second,
	}, {
		// wipe's operator-written text holds bidi controls, which would
		// reorder what a person reads before pressing Run (only erin,
		// role wiper, sees it).
		Name: "wipe", Title: "Wipe \u202enothing\u202c", Description: "Keeps \u2067/srv/data\u2069 safe.",
		Command: []string{"echo", "wiped", "{dir}", "{mode}"},
		Params: []config.ActionParam{{Name: "dir", Title: "Dir \u2066x\u2069", Description: "Which \u202dir\u202c", Pattern: "[a-z]+"},
			{Name: "mode", Type: "enum", Values: []string{"dry\u202erun", "real"}}},
		Roles: []string{"wiper"}, Hosts: []string{"web-*"}, Confirm: true, Timeout: 30 * time.Second,
	}}}
}

// uiUnits stands in for the units systemd lists on the host: the UI
// tests are about the page, the D-Bus listing has its own tests.
func uiUnits(_ context.Context, host, glob string) ([]api.UnitChoice, error) {
	return []api.UnitChoice{
		{Unit: "example@0042.service", LoadState: "loaded", ActiveState: "active", SubState: "running"},
		{Unit: "example@0043.service", LoadState: "loaded", ActiveState: "failed", SubState: "failed"},
		{Unit: "example@beta.service", LoadState: "loaded", ActiveState: "inactive", SubState: "dead"},
	}, nil
}

func newUIEnv(t *testing.T) *uiEnv {
	t.Helper()
	return newUIEnvOn(t, testenv.Postgres(t))
}

// newUIEnvOn is newUIEnv on the database dsn (a cluster of the test's
// own, which it may stop).
func newUIEnvOn(t *testing.T, dsn string) *uiEnv {
	t.Helper()
	return newUIEnvWith(t, dsn, testenv.NATS(t))
}

// newUIEnvWith is newUIEnv on the database dsn and the nats-server at
// natsURL (one of the test's own, which it may restart).
func newUIEnvWith(t *testing.T, dsn, natsURL string) *uiEnv {
	t.Helper()
	store, pool := testenv.Store(t, dsn)
	q := testenv.Queue(t, natsURL, "ui-test", queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second})
	e := &uiEnv{t: t, store: store, pool: pool, q: q, tokens: map[string]string{}}
	roles := map[string][]string{"alice": {"ops"}, "carol": {"viewer"}, "boss": {"admin"}, "dave": {"greeter"}, "erin": {"wiper"},
		"audra": {"auditor"}}
	var ac config.Auth
	for name, r := range roles {
		tok, hash := auth.NewToken()
		e.tokens[name] = tok
		ac.Tokens = append(ac.Tokens, config.Token{Name: name, SHA256: hash, Roles: r})
	}
	// JWTs too, for TestAuthorizationMatrix: jwt:alice is not alice.
	ac.JWT = config.JWT{Algorithm: "HS256", Secret: uiJWTSecret, Leeway: 30 * time.Second, MaxLifetime: 24 * time.Hour,
		RolesClaim: "roles", NameClaim: "sub"}
	authn, err := auth.New(ac, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New([]config.Rule{{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := action.New(uiActions())
	if err != nil {
		t.Fatal(err)
	}
	e.actions.Store(set)
	// One runbook, for the runbook pages.
	rbDir := t.TempDir()
	fence := "```"
	book := "# Hello\n\n# Environment Requirements\n" + fence + "yaml\nNAME: Who to greet\n" + fence + "\n\n" +
		"# File System Requirements\n" + fence + "yaml\nInput: []\n" + fence + "\n\n" +
		"# Script\n" + fence + "sh\necho \"hello from a runbook, $NAME\"\n" + fence + "\n\n# History\n"
	if err := os.WriteFile(filepath.Join(rbDir, "Hello.md"), []byte(book), 0o644); err != nil {
		t.Fatal(err)
	}
	// Names that are valid but mean something in a URL: pct%41.md must
	// never be taken for pctA.md.
	for name, greeting := range map[string]string{"a#b.md": "hash", "pct%41.md": "percent", "pctA.md": "other"} {
		text := strings.Replace(book, "hello from a runbook", greeting+" runbook", 1)
		if err := os.WriteFile(filepath.Join(rbDir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runbooks := config.DefaultRunbooks()
	runbooks.Dir, runbooks.Host = rbDir, "web-1"
	e.rbDir = rbDir

	logger := testenv.Logger(t)
	in := intake.New(store, uiPublisher{q, &e.failPublish}, func() intake.Authorizer { return pol },
		intake.Options{Actions: func() intake.ActionAuthorizer { return e.actions.Load() }}, logger)
	e.apiStore = &outputCounter{Store: store}
	srv := api.New(api.Deps{
		Store: e.apiStore, Queue: q, Intake: in, Logger: logger, Version: "test", Metrics: metrics.New(), // /metrics, for TestAuthorizationMatrix
		Auth: func() api.Authenticator { return authn },
		Settings: func() api.Settings {
			return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, RatePerPrincipal: int(e.ratePerPrincipal.Load()),
				ACL: e.acl.Load(), MaxStreams: int(e.maxStreams.Load())}
		},
		Status:  func() map[string]any { return map[string]any{} },
		Actions: &api.ActionDeps{Set: e.actions.Load, Choices: uiUnits},
		Runbooks: &api.RunbookDeps{Store: store, Config: func() config.Runbooks {
			c := runbooks
			if e.noRunbookHost.Load() {
				c.Host = ""
			}
			return c
		}},
	})
	e.handler = srv.Handler()
	hs := httptest.NewServer(e.handler)
	e.url, e.srv = hs.URL, hs
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); in.Run(runCtx) }()
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		stop()
		wg.Wait()
	})

	e.startWorker("web-1")
	return e
}

// startWorker starts a real worker for host, with the same actions and
// runbooks as the API's, stopped when the test ends.
func (e *uiEnv) startWorker(host string) {
	e.startWorkerFailing(host, nil)
}

// startWorkerFailing is startWorker with the worker's FailPoint set to
// fail: a worker that stops at a fail point (as if it crashed) stopped
// with its error, which the returned channel hands over (the test's
// end then expects no other).
func (e *uiEnv) startWorkerFailing(host string, fail func(string, *order.Order) error) <-chan error {
	t := e.t
	t.Helper()
	wcfg := config.Default()
	runbooks := config.DefaultRunbooks()
	runbooks.Dir, runbooks.Host = e.rbDir, "web-1"
	wcfg.Actions, wcfg.Runbooks = uiActions(), runbooks
	hp, err := hostpolicy.FromConfig(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	logger := testenv.Logger(t)
	w := worker.New(worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 2 * time.Second,
		ShutdownGrace: 5 * time.Second, FailPoint: fail}, e.store, e.q, hp, executor.New(logger), logger)
	wctx, wcancel := context.WithCancel(context.Background())
	var runErr error
	stopped, ended := make(chan error, 1), make(chan struct{})
	go func() { runErr = w.Run(wctx); stopped <- runErr; close(ended) }()
	t.Cleanup(func() {
		wcancel()
		select {
		case <-ended:
			if runErr != nil && fail == nil {
				t.Errorf("worker: %v", runErr)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("worker did not stop")
		}
	})
	return stopped
}

// uiPublisher is the queue, whose publish of an order fails while fail
// is set (NATS unavailable to the intake).
type uiPublisher struct {
	*queue.Queue
	fail *atomic.Bool
}

func (p uiPublisher) Publish(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
	if p.fail.Load() {
		return 0, errors.New("nats: connection closed (the test's)")
	}
	return p.Queue.Publish(ctx, host, id)
}

// outputCounter is the API's store, counting the bytes of output content
// the API reads through it: outputs that came whole with an order, and
// the slices of large ones that an answer streams (ReadOutputAt). A page
// that shows no output reads none. It counts what the API read, not the
// process's heap, which the worker's and the NATS server's work beside it
// moved as well.
type outputCounter struct {
	api.Store
	read atomic.Int64
}

func (c *outputCounter) count(orders ...*order.Order) {
	for _, o := range orders {
		if o != nil && o.Result != nil {
			c.read.Add(int64(len(o.Result.Stdout.Content) + len(o.Result.Stderr.Content)))
		}
	}
}

func (c *outputCounter) GetOrder(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := c.Store.GetOrder(ctx, id)
	c.count(o)
	return o, err
}

func (c *outputCounter) RecordedByKey(ctx context.Context, principal, key string) (*order.Order, error) {
	o, err := c.Store.RecordedByKey(ctx, principal, key)
	c.count(o)
	return o, err
}

func (c *outputCounter) GetOrderLean(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := c.Store.GetOrderLean(ctx, id)
	c.count(o)
	return o, err
}

func (c *outputCounter) GetOrderLeanWithCancel(ctx context.Context, id uuid.UUID) (*order.Order, *postgres.CancelRequest, error) {
	o, cr, err := c.Store.GetOrderLeanWithCancel(ctx, id)
	c.count(o)
	return o, cr, err
}

func (c *outputCounter) GetOrderWithoutOutputs(ctx context.Context, id uuid.UUID) (*order.Order, error) {
	o, err := c.Store.GetOrderWithoutOutputs(ctx, id)
	c.count(o)
	return o, err
}

func (c *outputCounter) ListOrders(ctx context.Context, f postgres.Filter) ([]*order.Order, *uuid.UUID, error) {
	list, next, err := c.Store.ListOrders(ctx, f)
	c.count(list...)
	return list, next, err
}

func (c *outputCounter) ReadOutputAt(ctx context.Context, id uuid.UUID, out postgres.Output, p []byte, off int64) (int, error) {
	n, err := c.Store.ReadOutputAt(ctx, id, out, p, off)
	c.read.Add(int64(n))
	return n, err
}
