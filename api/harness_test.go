package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
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
	"github.com/orderly-run/orderly/worker/systemd"
)

// The principals every apiEnv knows, with their roles: admin and auditor
// read every order; alice and bob (role ops) may run anything but read
// only their own orders.
var envRoles = map[string][]string{
	"admin":   {"admin"},
	"auditor": {"auditor"},
	"alice":   {"ops"},
	"bob":     {"ops"},
}

// newTokens makes a bearer token for every principal of envRoles. Two
// apiEnvs given the same tokens accept the same principals.
func newTokens() map[string]string {
	out := map[string]string{}
	for name := range envRoles {
		tok, _ := auth.NewToken()
		out[name] = tok
	}
	return out
}

// apiEnv is the API wired as `orderly api` wires it, on the real
// PostgreSQL and NATS of internal/testenv, served by httptest, with the NATS
// intake running and, for the hosts asked for, real workers.
type apiEnv struct {
	t       *testing.T
	opts    envOptions
	dsn     string
	natsURL string
	store   *postgres.Store
	pool    *pgxpool.Pool
	authn   *atomic.Pointer[auth.Authenticator] // shared by copies of the env
	q       *queue.Queue
	url     string
	// handler is what the env's HTTP server serves, for tests that call
	// it without a connection (submit_allocs_test.go).
	handler http.Handler
	tokens  map[string]string
	// stop ends the env's intake loops and its NATS intake, as a
	// replica that stops pulling; the HTTP server goes on.
	stop context.CancelFunc
}

// envOptions configure newAPIEnv; zero values mean a fresh database, fresh
// tokens and no workers.
type envOptions struct {
	dsn    string
	tokens map[string]string
	hosts  []string
	// actions are the API's actions and workerActions the workers' own
	// (actions_test.go); logger, when set, replaces the test log.
	actions, workerActions config.Actions
	logger                 *slog.Logger
	// units, when set, are the units every worker's systemd "has" (for
	// unit choices, asked over the bus as `orderly` does).
	units []systemd.Unit
	// compat are drop-in surfaces mounted beside the native routes.
	compat []api.CompatSurface
	// lost, when set, runs the intake's search for orders whose messages
	// are gone this often, for orders at least this old.
	lost time.Duration
	// publishFailures, when set, fails the intake's publishes of orders
	// to their host's stream while it is positive (one per publish): the
	// way to lose a publish after the insert on demand.
	publishFailures *atomic.Int64
	// store, when set, is what the API reads and writes through, given
	// the real store (to count its calls).
	store func(api.Store) api.Store
	// metrics, when set, is what the servers and runbookAPI's intake
	// count in.
	metrics *metrics.Metrics
	// maxOutput, when set, is the workers' worker.max_output_bytes.
	maxOutput int64
	// maxStreams is limits.max_streams_per_principal (0: none).
	maxStreams int
	// ratePerPrincipal is limits.rate_per_principal (0: none).
	ratePerPrincipal int
	// ratePerIP is limits.rate_per_ip (0: none).
	ratePerIP int
	// intakeStore, when set, is what the intake records through, given
	// the real store (to hold a call up).
	intakeStore func(intake.Store) intake.Store
	// markEvery, when set, is how long the intake's publish marks wait
	// for others to share their DELETE (intake.Options.MarkEvery).
	markEvery time.Duration
	// natsURL, when set, is a nats-server of the test's own (one it
	// restarts), instead of a fresh one.
	natsURL string
	// natsOpts, when set, are the API connection's own options (a
	// reconnect held up).
	natsOpts []nats.Option
	// name, when set, tells this env's log lines and its connection's
	// events from another env's in the same test (env=name).
	name string
}

// failingPublisher is the queue with publishes of orders failing while
// failures is positive.
type failingPublisher struct {
	*queue.Queue
	failures *atomic.Int64
}

func (p failingPublisher) Publish(ctx context.Context, host string, id uuid.UUID) (uint64, error) {
	if p.failures.Add(-1) >= 0 {
		return 0, errors.New("injected publish failure")
	}
	return p.Queue.Publish(ctx, host, id)
}

// liveSweepOff keeps the intake's sweep of live leftovers
// (intake.FreeLiveLeftovers, tested in internal/intake) from running
// within a test: what frees a finished order's live output here is the
// finished event's path alone, which the tests then prove.
const liveSweepOff = 24 * time.Hour

func newAPIEnv(t *testing.T, opts envOptions) *apiEnv {
	t.Helper()
	if opts.dsn == "" {
		opts.dsn = testenv.Postgres(t)
	}
	if opts.tokens == nil {
		opts.tokens = newTokens()
	}
	if opts.natsURL == "" {
		opts.natsURL = testenv.NATS(t)
	}
	e := &apiEnv{t: t, dsn: opts.dsn, natsURL: opts.natsURL, tokens: opts.tokens, opts: opts}
	e.store, e.pool = testenv.Store(t, e.dsn)
	qopts := queue.Options{AckWait: 2 * time.Second, LeaseTTL: 2 * time.Second, Logger: e.logger()}
	if opts.natsOpts == nil {
		e.q = testenv.Queue(t, e.natsURL, e.connName(), qopts)
	} else {
		// Its connection's events logged (natsOpts, last, may handle
		// them instead).
		nc, err := queue.Connect(e.natsURL, "api-test", append(testenv.NATSEvents(t, e.connName()), opts.natsOpts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if e.q, err = queue.New(testenv.Context(t), nc, qopts); err != nil {
			t.Fatal(err)
		}
	}
	e.authn = new(atomic.Pointer[auth.Authenticator])
	e.authn.Store(authenticator(t, opts.tokens, ""))
	pol, err := policy.New([]config.Rule{
		{Name: "admin", Roles: []string{"admin"}, Hosts: []string{"*"}, Allow: []string{".*"}, RunAs: []string{"", "*"}},
		// The deny is written against the path: only a worker knows that
		// "whoami" is /usr/bin/whoami (TestDenyOnTheResolvedPath).
		{Name: "ops", Roles: []string{"ops"}, Hosts: []string{"*"}, Allow: []string{".*"}, Deny: []string{"^/usr/bin/whoami( |$)"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	logger := e.logger()
	acts, err := action.New(opts.actions)
	if err != nil {
		t.Fatal(err)
	}
	var pub intake.Publisher = e.q
	if opts.publishFailures != nil {
		pub = failingPublisher{Queue: e.q, failures: opts.publishFailures}
	}
	var istore intake.Store = e.store
	if opts.intakeStore != nil {
		istore = opts.intakeStore(e.store)
	}
	in := intake.New(istore, pub, func() intake.Authorizer { return pol },
		intake.Options{Actions: func() intake.ActionAuthorizer { return acts }, LostAfter: opts.lost, LostEvery: opts.lost,
			LiveSweepEvery: liveSweepOff, MarkEvery: opts.markEvery}, logger)
	var store api.Store = e.store
	if opts.store != nil {
		store = opts.store(e.store)
	}
	srv := api.New(api.Deps{
		Store: store, Queue: e.q, Intake: in, Logger: logger, Version: "test", Metrics: opts.metrics,
		Auth: func() api.Authenticator { return e.authn.Load() },
		Settings: func() api.Settings {
			return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second, MaxStreams: opts.maxStreams,
				RatePerPrincipal: opts.ratePerPrincipal, RatePerIP: opts.ratePerIP}
		},
		Status: func() map[string]any { return map[string]any{} },
		Actions: &api.ActionDeps{Set: func() *action.Set { return acts },
			Choices: func(ctx context.Context, host, glob string) ([]api.UnitChoice, error) {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				units, err := e.q.RequestChoices(ctx, host, glob)
				if err != nil {
					return nil, &order.Error{Code: order.CodeUnavailable, Message: err.Error()}
				}
				out := make([]api.UnitChoice, len(units))
				for i, u := range units {
					out[i] = api.UnitChoice{Unit: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState}
				}
				return out, nil
			}},
	})
	srv.MountCompat(opts.compat...)
	e.handler = srv.Handler()
	hs := httptest.NewServer(e.handler)
	e.url = hs.URL
	runCtx, stop := context.WithCancel(context.Background())
	e.stop = stop
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); in.Run(runCtx) }()
	go func() {
		defer wg.Done()
		if err := srv.RunNATSIntake(runCtx); err != nil {
			t.Errorf("nats intake: %v", err)
		}
	}()
	// Cleanups run last-in first-out: the HTTP server and the loops stop
	// before the connections they use are closed.
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		stop()
		wg.Wait()
	})
	for _, h := range opts.hosts {
		e.startWorker(h)
	}
	return e
}

// revoke stops accepting name's token, as a reload that removes it does.
func (e *apiEnv) revoke(name string) {
	e.authn.Store(authenticator(e.t, e.tokens, name))
}

// runbookAPI is another API on e's store, bus and tokens, with runbooks
// on and the one policy rule given; opts.store and opts.intakeStore, when
// set, are what it and its intake read and write orders through.
func (e *apiEnv) runbookAPI(rule config.Rule, settings func() api.Settings, runbooks func() config.Runbooks) *api.Server {
	e.t.Helper()
	authn := authenticator(e.t, e.tokens, "")
	pol, err := policy.New([]config.Rule{rule})
	if err != nil {
		e.t.Fatal(err)
	}
	logger := e.logger()
	var pub intake.Publisher = e.q
	if e.opts.publishFailures != nil {
		pub = failingPublisher{Queue: e.q, failures: e.opts.publishFailures}
	}
	var istore intake.Store = e.store
	if e.opts.intakeStore != nil {
		istore = e.opts.intakeStore(e.store)
	}
	in := intake.New(istore, pub, func() intake.Authorizer { return pol }, intake.Options{Metrics: e.opts.metrics,
		LiveSweepEvery: liveSweepOff}, logger)
	var store api.Store = e.store
	if e.opts.store != nil {
		store = e.opts.store(e.store)
	}
	return api.New(api.Deps{Store: store, Queue: e.q, Intake: in, Logger: logger, Version: "test", Metrics: e.opts.metrics,
		Auth: func() api.Authenticator { return authn }, Settings: settings,
		Runbooks: &api.RunbookDeps{Store: e.store, Config: runbooks}})
}

// authenticator accepts tokens, each for its principal with the roles of
// envRoles, but except's.
func authenticator(t testing.TB, tokens map[string]string, except string) *auth.Authenticator {
	t.Helper()
	var cfg config.Auth
	for name, tok := range tokens {
		if name != except {
			cfg.Tokens = append(cfg.Tokens, config.Token{Name: name, SHA256: auth.HashToken(tok), Roles: envRoles[name]})
		}
	}
	authn, err := auth.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return authn
}

// startWorker runs a real worker for host, with the default host policy,
// until the test ends.
func (e *apiEnv) startWorker(host string) {
	e.t.Helper()
	hp := e.hostPolicy()
	if e.opts.units != nil {
		hp.SetUnitLister(func(_ context.Context, _, glob string) ([]systemd.Unit, error) {
			var out []systemd.Unit
			for _, u := range e.opts.units {
				if ok, _ := path.Match(glob, u.Name); ok {
					out = append(out, u)
				}
			}
			return out, nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Registered before the worker's: cleanups run last-in first-out, so
	// the choices stop after the worker.
	e.t.Cleanup(cancel)
	err := e.q.ServeChoices(ctx, host, func(ctx context.Context, glob string) ([]queue.Unit, error) {
		units, err := hp.UnitChoices(ctx, glob)
		out := make([]queue.Unit, len(units))
		for i, u := range units {
			out[i] = queue.Unit{Name: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState}
		}
		return out, err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.runWorker(host, e.store, hp, nil)
}

// hostPolicy is the workers' host policy: the default, with the env's
// actions and output cap.
func (e *apiEnv) hostPolicy() *hostpolicy.Policy {
	e.t.Helper()
	c := config.Default()
	c.Actions = e.opts.workerActions
	if e.opts.maxOutput > 0 {
		c.Worker.MaxOutputBytes = e.opts.maxOutput
	}
	hp, err := hostpolicy.FromConfig(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return hp
}

// errWorkerCrash is what a test's fail point returns to stop a worker
// as if it died: runWorker does not count the stop as a failure.
var errWorkerCrash = errors.New("injected worker crash")

// runWorker runs a real worker for host on store with the host policy hp
// and the fail point fp (nil for none) until the test ends, and returns
// a channel closed once the worker stopped by itself. A Run error fails
// the test, unless fp's errWorkerCrash stopped it.
func (e *apiEnv) runWorker(host string, store worker.Store, hp *hostpolicy.Policy, fp func(string, *order.Order) error) <-chan struct{} {
	e.t.Helper()
	logger := e.logger()
	w := worker.New(worker.Options{Host: host, Heartbeat: 200 * time.Millisecond, AckWait: 2 * time.Second,
		ShutdownGrace: 5 * time.Second, FailPoint: fp}, store, e.q, hp, executor.New(logger), logger)
	ctx, cancel := context.WithCancel(context.Background())
	fin := make(chan struct{})
	var err error
	go func() {
		err = w.Run(ctx)
		close(fin)
	}()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-fin:
			if err != nil && !errors.Is(err, errWorkerCrash) {
				e.t.Errorf("worker %s: %v", host, err)
			}
		case <-time.After(20 * time.Second):
			e.t.Errorf("worker %s did not stop", host)
		}
	})
	return fin
}

func (e *apiEnv) logger() *slog.Logger {
	if e.opts.logger != nil {
		return e.opts.logger
	}
	if e.opts.name != "" {
		return testenv.Logger(e.t).With("env", e.opts.name)
	}
	return testenv.Logger(e.t)
}

// connName is the name of e's NATS connection in the test's log.
func (e *apiEnv) connName() string {
	if e.opts.name != "" {
		return "api-test " + e.opts.name
	}
	return "api-test"
}

// readyzBody is /readyz's answer, as a test reads it.
type readyzBody struct {
	Status   string            `json:"status"`
	Checks   map[string]string `json:"checks"`
	Reasons  map[string]string `json:"reasons"`
	Warnings map[string]string `json:"warnings"`
}

// readyz is GET /readyz: its status and its answer.
func (e *apiEnv) readyz() (int, readyzBody) {
	e.t.Helper()
	code, b := e.do("", "GET", "/readyz", nil)
	var r readyzBody
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatalf("readyz: %v: %s", err, b)
	}
	return code, r
}

// do sends a request as principal (its token; "" sends none) with hdr as
// name/value pairs, and returns the status and body.
func (e *apiEnv) do(as, method, path string, body any, hdr ...string) (int, []byte) {
	e.t.Helper()
	code, _, b := e.doHeader(as, method, path, body, hdr...)
	return code, b
}

// doHeader is do, and returns the answer's headers too.
func (e *apiEnv) doHeader(as, method, path string, body any, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(testenv.Context(e.t), method, e.url+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if as != "" {
		req.Header.Set("Authorization", "Bearer "+e.tokens[as])
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	named := map[string]bool{} // a name given twice is sent twice
	for i := 0; i+1 < len(hdr); i += 2 {
		if named[hdr[i]] {
			req.Header.Add(hdr[i], hdr[i+1])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		named[hdr[i]] = true
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
	return resp.StatusCode, resp.Header, b
}

// submit posts an order as principal and decodes the answer, which must
// have status want.
func (e *apiEnv) submit(as string, body map[string]any, query string, want int, hdr ...string) api.Order {
	e.t.Helper()
	code, b := e.do(as, "POST", "/v1/orders"+query, body, hdr...)
	if code != want {
		e.t.Fatalf("%s: POST /v1/orders%s = %d, want %d: %s", as, query, code, want, b)
	}
	var o api.Order
	if err := json.Unmarshal(b, &o); err != nil {
		e.t.Fatalf("decode order: %v: %s", err, b)
	}
	return o
}

// lastPublished is when publish last sent each Nats-Msg-Id to each
// server.
var lastPublished sync.Map

// publish sends a NATS submission as principal to orderly.submit.<host>
// with the given Nats-Msg-Id ("" for none) and further headers (name,
// value pairs, each added), and returns the intake's answer, checked as
// a submitter checks it (api.VerifyAnswer): every answer is signed.
func (e *apiEnv) publish(as, host, msgID string, body map[string]any, hdr ...string) api.IntakeAnswer {
	e.t.Helper()
	nc, inbox, sub := replyInbox(e.t, e.natsURL)
	defer nc.Close() // one per submission: not left open to the test's end
	if msgID != "" {
		// A retry inside ORDERLY_SUBMIT's duplicate window is dropped by
		// JetStream before the intake sees it (README): a publisher's
		// retry comes after its timeout, so the harness's does too.
		key := e.natsURL + " " + msgID
		if last, ok := lastPublished.Load(key); ok {
			time.Sleep(time.Until(last.(time.Time).Add(2 * queue.SubmitDedupWindow)))
		}
		// When the answer came, which is after the server stored the
		// submission: a deferred call's arguments are taken at the defer
		// statement, before the publish.
		defer func() { lastPublished.Store(key, time.Now()) }()
	}
	publishSubmission(e.t, nc, e.tokens[as], inbox, host, msgID, body, hdr...)
	reply, err := sub.NextMsg(20 * time.Second)
	if err != nil {
		e.t.Fatalf("%s: no intake answer for Nats-Msg-Id %q: %v", as, msgID, err)
	}
	a, err := api.VerifyAnswer("Bearer "+e.tokens[as], reply)
	if err != nil {
		e.t.Fatalf("intake answer %.300s (header %v): %v", reply.Data, reply.Header, err)
	}
	return a
}

// events reads the SSE stream of an order as principal until stop
// returns true or the stream ends, and returns the status and the event
// names with their data.
func (e *apiEnv) events(as string, id uuid.UUID, stop func(event, data string) bool) (int, []string) {
	e.t.Helper()
	return e.eventsAt(as, "/v1/orders/"+id.String()+"/events", stop)
}

// openEvents opens the SSE stream at path (an order's events, with a
// query, say) as principal as, resumed after lastID when it is set; the
// caller closes the answer's body.
func openEvents(t testing.TB, ctx context.Context, e *apiEnv, as, path, lastID string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.tokens[as])
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// eventsAt is events of the stream at path (with a query, say).
func (e *apiEnv) eventsAt(as, path string, stop func(event, data string) bool) (int, []string) {
	e.t.Helper()
	resp := openEvents(e.t, testenv.Context(e.t), e, as, path, "")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, []string{string(b)}
	}
	var out []string
	var event, data string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" {
				out = append(out, event+" "+data)
				if stop(event, data) {
					return resp.StatusCode, out
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
	return resp.StatusCode, out
}

// wantError checks an error answer's status and stable code.
func wantError(t testing.TB, code int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var eb api.ErrorBody
	if code != wantStatus || json.Unmarshal(body, &eb) != nil || string(eb.Error.Code) != wantCode {
		t.Fatalf("got %d %s, want %d %s", code, body, wantStatus, wantCode)
	}
}

// stage0Server mounts the stage0 surface (with /dev-login) on a runbook
// API over the runbooks in dir, run on h1 by the roles ops and admin, and
// returns a copy of e whose requests go to it.
func (e *apiEnv) stage0Server(dir string) *apiEnv {
	e.t.Helper()
	cfg := config.Default()
	cfg.Runbooks.Dir, cfg.Runbooks.Host, cfg.Runbooks.Timeout = dir, "h1", time.Minute
	cfg.Compat.Stage0.Enabled, cfg.Compat.Stage0.EnableLogin = true, true
	cfg.Compat.Stage0.JWTSecret = "stage0-test-secret-0123456789abcdef0123456789"
	current := func() config.Config { return cfg }
	srv := e.runbookAPI(config.Rule{Name: "ops", Roles: []string{"ops", "admin"}, Hosts: []string{"*"}, Allow: []string{"^runbook:"}},
		func() api.Settings { return api.Settings{MaxBodyBytes: 1 << 20, MaxWait: 30 * time.Second} },
		func() config.Runbooks { return current().Runbooks })
	h := &compat.Stage0{Deps: compat.Deps{Orders: srv, Config: current, ACL: func() *netacl.ACL { return nil }}, Runbooks: srv,
		Getenv: func(string) (string, bool) { return "", false }, Shutdown: func() {}}
	srv.MountCompat(api.CompatSurface{Prefix: "/api", Handler: h}, api.CompatSurface{Prefix: "/dev-login", Handler: h})
	hs := httptest.NewServer(srv.Handler())
	e.t.Cleanup(hs.Close)
	rb := *e
	rb.url = hs.URL
	return &rb
}

// publishSubmission publishes a NATS submission with token to
// orderly.submit.<host>, its answer to inbox, with the given Nats-Msg-Id
// ("" for none) and further headers (name, value pairs, each added).
func publishSubmission(t *testing.T, nc *nats.Conn, token, inbox, host, msgID string, body any, hdr ...string) {
	t.Helper()
	m := nats.NewMsg(queue.SubmitSubject + host)
	m.Header.Set("Authorization", "Bearer "+token)
	m.Header.Set("Orderly-Reply", inbox)
	if msgID != "" {
		m.Header.Set("Nats-Msg-Id", msgID)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Add(hdr[i], hdr[i+1])
	}
	var err error
	if m.Data, err = json.Marshal(body); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}

// replyInbox connects to the NATS server at url, closed when the test
// ends, and subscribes to a new inbox there: where a submission's
// Orderly-Reply answers arrive.
func replyInbox(t *testing.T, url string) (*nats.Conn, string, *nats.Subscription) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	return nc, inbox, sub
}
