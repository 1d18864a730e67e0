package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/worker"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"

	"github.com/jackc/pgx/v5/pgxpool"
)

// backend is the connections every server command needs.
type backend struct {
	metrics *metrics.Metrics // one registry for everything in this process
	pool    *pgxpool.Pool
	store   *postgres.Store
	nc      *nats.Conn
	queue   *queue.Queue
	rate    api.RateCounter // the API's shared rate-limit counters; nil (no typed nil) for a worker
	// presence is the API's presence when the command made it before
	// the API (serve's: takeOverPresence); nil, startAPIOn makes one.
	presence *api.Presence
	// refusal is whether the NATS servers refuse this process's
	// credential now; a worker's systemd status says so.
	refusal *natsRefusal
	// pgNotStarting is serve's managed PostgreSQL's failed starts in a
	// row, for /readyz and /v1/status; nil with a database of its own.
	pgNotStarting func() (pgembed.NotStarting, bool)
	// markSeed is the file holding the NATS seed the worker's claim mark
	// key is derived from (claimMarkKey): its connection's nkey or
	// credentials file; serve's embedded NATS gives its own host's worker
	// seed, which a standby of that host connects with.
	markSeed string
	logger   *slog.Logger
}

func openBackend(ctx context.Context, cfg config.Config, name string, logger *slog.Logger, extra ...nats.Option) (*backend, error) {
	return openBackendAs(ctx, cfg, name, roleAPI, logger, extra...)
}

// openBackendAs is openBackend connecting to NATS as role (natsauth.go),
// with extra options last (serve's in-process connection). It fails at
// the first error: serve starts its own dependencies.
func openBackendAs(ctx context.Context, cfg config.Config, name string, role natsRole, logger *slog.Logger, extra ...nats.Option) (*backend, error) {
	return openBackendWith(ctx, cfg, name, role, tryOnce, logger, extra...)
}

// openBackendWith is openBackendAs with each step that needs PostgreSQL
// or NATS run by try: api and worker pass waitForDependencies (startup.go)
// so that they wait for dependencies that are not up yet. The config is
// checked first, since waiting cannot fix it.
func openBackendWith(ctx context.Context, cfg config.Config, name string, role natsRole, try stepRunner, logger *slog.Logger, extra ...nats.Option) (*backend, error) {
	if cfg.DatabaseURL == "" {
		return nil, errors.New("no database: set database_url (--database-url or ORDERLY_DATABASE_URL)")
	}
	if cfg.NATS.URL == "" {
		return nil, errors.New("no NATS: set nats.url (--nats-url or ORDERLY_NATS__URL)")
	}
	opts, err := natsAuth(cfg, role)
	if err != nil {
		return nil, err
	}
	// PostgreSQL and NATS are reached side by side, neither needing the
	// other: one after the other, a worker started with a whole fleet
	// (every worker SIGKILLed and started again, at a load of 40) spent
	// 0.1 – 1.1 s reaching PostgreSQL before its first word to NATS, and
	// then as long again there (docs/decisions.md, hE29). The first that
	// fails for good ends the other's wait: its error is the start's, as
	// when they ran in turn.
	octx, stopOpen := context.WithCancel(ctx)
	defer stopOpen()
	var pool *pgxpool.Pool
	var pgFailed atomic.Bool
	pgDone := make(chan error, 1)
	go func() {
		err := try(octx, depPostgres, func(ctx context.Context) error {
			// The pool's connections carry the process's name, as its NATS
			// connection does (orderly-api, orderly-worker-<host>).
			p, err := postgres.OpenAs(ctx, cfg.DatabaseURL, name)
			if err != nil {
				return postgresConnectError(err)
			}
			if err := postgres.New(p).CheckSchema(ctx); err != nil {
				p.Close()
				return err
			}
			pool = p
			return nil
		})
		if err != nil {
			pgFailed.Store(true)
			stopOpen()
		}
		pgDone <- err
	}()
	// fail ends the start on err, NATS's, once PostgreSQL's side is done:
	// with PostgreSQL's error when that failed first.
	fail := func(err error) (*backend, error) {
		pgFirst := pgFailed.Load()
		stopOpen()
		if perr := <-pgDone; perr != nil && pgFirst {
			err = perr
		}
		if pool != nil {
			pool.Close()
		}
		return nil, err
	}
	nb, err := openBus(octx, cfg, name, role, try, logger, opts, extra)
	if err != nil {
		return fail(err)
	}
	if err := <-pgDone; err != nil {
		nb.nc.Close()
		return nil, err
	}
	if role == roleAPI {
		// Workers go through a transaction pooler (docs/scaling.md); the
		// API's insert cannot: its fence ends by pid the backend of an
		// insert whose answer was lost, and a pooler's pid is its own.
		if pooled, err := postgres.BehindPooler(ctx, pool); err == nil && pooled {
			logger.Warn("database_url goes through a connection pooler: when an order's insert loses its connection the API cannot end the insert's backend (it knows the pooler's pid, not PostgreSQL's), and its answer may be wrong about whether the order was recorded; point the API's database_url at PostgreSQL itself (docs/scaling.md)",
				"setting", "database_url")
		}
	}
	return &backend{metrics: metrics.New(), pool: pool, store: postgres.New(pool), nc: nb.nc, queue: nb.queue, rate: nb.rate, refusal: nb.refusal,
		markSeed: cmp.Or(cfg.NATS.Nkey, cfg.NATS.Credentials), logger: logger}, nil
}

// bus is what openBus reached of NATS for a backend.
type bus struct {
	nc      *nats.Conn
	queue   *queue.Queue
	rate    api.RateCounter
	refusal *natsRefusal
}

// openBus connects to NATS as role and sets orderly's streams up on the
// connection (openBackendWith's NATS side), each step run by try.
func openBus(ctx context.Context, cfg config.Config, name string, role natsRole, try stepRunner, logger *slog.Logger, opts, extra []nats.Option) (bus, error) {
	refusal := newNATSRefusal(natsCredentialSetting(cfg))
	link := &queue.ConnLink{}
	opts = append(opts, nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
		if err != nil {
			logger.Warn("nats disconnected", "error", err, "url", link.Dropped())
		}
		if isNATSRefusal(err) {
			refusal.refuse(err)
		}
	}), nats.ReconnectHandler(func(nc *nats.Conn) {
		url, down := link.Back(nc)
		logger.Info("nats reconnected", "url", url, "down", down)
		refusal.accept()
	}),
		// Without it, nats.go prints asynchronous errors (slow consumer,
		// permission violation) as plain text on stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			if n, ok := natsErrors.let(subject + "\x00" + err.Error()); ok {
				logger.Warn("nats error", "subject", subject, "error", err, "repeated", n)
			}
			if sub == nil && isNATSRefusal(err) {
				refusal.refuse(err)
			}
		}))
	opts = append(opts, extra...)
	var nc *nats.Conn
	dials := 0
	err := try(ctx, depNATS, func(context.Context) error {
		// Once connected, the client reconnects by itself for good
		// (queue.Connect), so only the first connection is retried here.
		dials++
		c, err := queue.Connect(cfg.NATS.URL, name, opts...)
		if err == nil {
			link.Connected(c)
		}
		nc = c
		return natsConnectError(cfg, role, err)
	})
	if err != nil {
		return bus{}, err
	}
	if backendNATSConnected != nil {
		backendNATSConnected(nc)
	}
	warnCleartext(nc, cfg.DatabaseURL, logger)
	if !nc.AuthRequired() {
		// DESIGN §7: every connection authenticates, with its role's
		// permissions. Workers run only what PostgreSQL holds, but on an
		// open bus anyone can replay and reorder a host's orders, wake
		// its worker and read what flows.
		logger.Warn("the NATS server requires no credential: anyone who reaches it can publish on orderly's subjects; give each role its own (deploy/nats/auth.conf)",
			"url", redactNATS(cfg.NATS.URL))
	}
	var q *queue.Queue
	var rate api.RateCounter
	err = try(ctx, depNATS, func(ctx context.Context) error {
		var prev time.Duration
		had := false
		if role == roleAPI {
			prev, had = queue.HostsBucketTTL(ctx, nc)
		}
		got, err := openQueue(ctx, nc, cfg, role, logger)
		if err == nil && role == roleAPI && had && prev > cfg.NATS.LeaseTTL {
			// Every running worker's lease shrinks now. They follow
			// (worker.beat), but a lease last renewed longer ago than
			// the new TTL lapses at once, and a standby may take its
			// host, ending the order it runs.
			logger.Warn("nats.lease_ttl shortened the host leases of running workers: a worker whose nats.heartbeat is over a third of it renews faster and logs an error until restarted with a shorter one, and a lease last renewed longer ago than the new TTL lapses now (lower the workers' nats.heartbeat first)",
				"bucket", queue.HostsBucket, "from", prev, "to", cfg.NATS.LeaseTTL)
		}
		if err == nil && role == roleAPI {
			// Its bucket is JetStream state like the streams, and as
			// likely to meet a cluster that loses its meta leader a moment
			// after creating them: created in the same wait, not after it.
			var rc *queue.RateCounter
			if rc, err = got.RateCounter(ctx, time.Minute); err == nil {
				rate = rc
			}
		}
		q = got
		return queueStartError(nc, cfg, err)
	})
	if err != nil {
		nc.Close()
		return bus{}, err
	}
	if dials > 1 {
		// The server did not answer the first dial: a standby of this
		// process must hear it answer for a lease before it takes a
		// lease its holder did not release (queue.HeardSilence).
		q.HeardSilence()
	}
	return bus{nc: nc, queue: q, rate: rate, refusal: refusal}, nil
}

// backendNATSConnected, set by a test only, is called with a backend's
// NATS connection once it is made, before the streams are set up on it.
var backendNATSConnected func(*nats.Conn)

// close drains NATS, then closes the pool (STYLE: shutdown order).
func (b *backend) close() {
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
	}
	for i := 0; i < 50 && !b.nc.IsClosed(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		b.pool.Close()
	}()
	select {
	case <-closed:
	case <-time.After(poolCloseWait):
		// The process exits next, and its sockets close with it.
		b.logger.Warn("PostgreSQL did not answer the close of this process's connections; exiting without it",
			"waited", poolCloseWait.String())
	}
}

// poolCloseWait bounds how long a stopping process waits for its
// PostgreSQL connections to close. The pool waits for the connections
// it destroys, and one whose statement was canceled (a statement out in
// a frozen server when the stop came) is closed by a cancel request
// that pgx gives 15 s: a worker or an API stopped while PostgreSQL was
// frozen (SIGSTOP, a stalled VM, a proxy that stopped forwarding) took
// 15 s more to exit, saying nothing after "shutting down".
var poolCloseWait = 2 * time.Second

// natsErrors thins out a NATS error that repeats: a refused credential
// comes back on every reconnect attempt, four times a second.
var natsErrors = &logThrottle{every: 30 * time.Second}

// logThrottle lets one line per key through every interval, saying how
// many of it were held back since.
type logThrottle struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

func (l *logThrottle) let(key string) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.held = map[string]time.Time{}, map[string]int{}
	}
	if now := time.Now(); now.Sub(l.last[key]) >= l.every {
		held = l.held[key]
		l.last[key], l.held[key] = now, 0
		if len(l.last) > 1000 { // keys are error texts: keep the map bounded
			clear(l.last)
			clear(l.held)
			l.last[key] = now
		}
		return held, true
	}
	l.held[key]++
	return 0, false
}

// defaultPolicy is used when the config has no policy: the admin role may
// run anything as anyone, everyone else nothing. A real deployment writes
// its own rules (deploy/orderly.example.yaml).
func defaultPolicy() []config.Rule {
	return []config.Rule{{Name: policy.BuiltinAdmin, Roles: []string{"admin"}, Hosts: []string{"*"},
		Allow: []string{".*"}, RunAs: []string{"", "*"}}}
}

// security is the reloadable part of the API: authenticator, policy and
// ACL, built together for a config and swapped together when a reload
// commits.
type security struct {
	authn  atomic.Pointer[auth.Authenticator]
	policy atomic.Pointer[policy.Engine]
	acl    atomic.Pointer[netacl.ACL]
	store  *postgres.Store
	// logger and metrics get the JWT key set's refreshes (auth.jwt.jwks).
	logger  *slog.Logger
	metrics *metrics.Metrics

	mu      sync.Mutex  // orders commits and token refreshes
	authCfg config.Auth // what the authenticator in use was built from
	tokens  string      // and the runtime tokens it holds (tokenSum)
}

// tokenRefresh is how often an API re-reads the runtime tokens
// (api_tokens): one rotated by another process (serve's admin token,
// `orderly token`) takes effect on every replica within it, not only on
// the next reload.
var tokenRefresh = 10 * time.Second

// tokenSum identifies a set of runtime tokens, to notice a change.
func tokenSum(ts []postgres.APIToken) string {
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.Name + "\x00" + t.SHA256 + "\x00" + strings.Join(t.Roles, ",") + "\n")
	}
	return b.String()
}

// prepare builds the security settings cfg asks for (key files read,
// tokens loaded from PostgreSQL, rules and CIDRs compiled) without
// touching the running ones; commit swaps them in. It is the API's
// config.Preparer, so a key that fails refuses the whole reload.
func (s *security) prepare(ctx context.Context, cfg config.Config) (commit func(), err error) {
	tokens, err := s.store.APITokens(ctx)
	if err != nil {
		return nil, err
	}
	return s.prepareWith(cfg, tokens)
}

// prepareWith is prepare with the runtime tokens already read.
func (s *security) prepareWith(cfg config.Config, tokens []postgres.APIToken) (commit func(), err error) {
	a, err := s.authWith(cfg.Auth, tokens)
	if err != nil {
		return nil, err
	}
	sum := tokenSum(tokens)
	rules := cfg.Policy
	if len(rules) == 0 {
		rules = defaultPolicy()
	}
	p, err := policy.New(rules)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	acl, err := netacl.New(cfg.ACL)
	if err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.authn.Store(a)
		s.policy.Store(p)
		s.acl.Store(acl)
		s.authCfg, s.tokens = cfg.Auth, sum
	}, nil
}

// authWith is the authenticator of cfg plus the runtime tokens. It keeps
// the JWT key set of the authenticator in use when auth.jwt.jwks is the
// same, rather than fetching it again on every reload and token change.
func (s *security) authWith(cfg config.Auth, tokens []postgres.APIToken) (*auth.Authenticator, error) {
	a, err := auth.NewWith(cfg, auth.Options{Now: time.Now, Previous: s.authn.Load(), Logger: s.logger, OnJWKSRefresh: s.metrics.JWKSRefreshed})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	for _, t := range tokens {
		if err := a.AddToken(t.Name, t.SHA256, t.Roles); err != nil {
			// serve's own admin token is one of these, named admin.
			return nil, fmt.Errorf("runtime token (kept in PostgreSQL, table api_tokens; orderly serve's own admin token is %q there): %w: "+
				"rename the one in auth.tokens", serveAdminToken, err)
		}
	}
	return a, nil
}

// refreshTokens swaps in an authenticator with the runtime tokens
// PostgreSQL holds now, built from the same auth config, when they
// changed since it was built. A failure keeps the one in use.
func (s *security) refreshTokens(ctx context.Context, logger *slog.Logger) {
	tokens, err := s.store.APITokens(ctx)
	if err != nil {
		return // PostgreSQL unreachable: the next round tries again
	}
	sum := tokenSum(tokens)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sum == s.tokens {
		return
	}
	a, err := s.authWith(s.authCfg, tokens)
	if err != nil {
		logger.Error("runtime tokens changed in PostgreSQL but cannot be loaded; the previous ones stay", "error", err)
		return
	}
	s.authn.Store(a)
	s.tokens = sum
	logger.Info("runtime tokens changed in PostgreSQL; loaded", "tokens", len(tokens))
}

// apiRunner is a running API: the intake loops and the HTTP server.
type apiRunner struct {
	srv    *http.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	URL    string
	cert   *servedCertificate // over TLS: the pair served
}

func startAPI(ctx context.Context, w *config.Watcher, b *backend, logger *slog.Logger) (*apiRunner, error) {
	return startAPIOn(ctx, w, b, logger, nil)
}

// startAPIOn is startAPI serving on ln, which it then owns; with a nil ln
// it opens the configured listener itself, once the rest of the API is
// ready.
func startAPIOn(ctx context.Context, w *config.Watcher, b *backend, logger *slog.Logger, ln net.Listener) (*apiRunner, error) {
	cfg := w.Current()
	sec := &security{store: b.store, logger: logger, metrics: b.metrics}
	// The runtime tokens are the start's one read of PostgreSQL after the
	// backend's connect: a connection dropped between the two (a restart)
	// ended the start, `list api tokens: unexpected EOF`, where the
	// connect waits. Waited out the same way, as the worker's login check
	// is; a login that may not read api_tokens still ends it at once.
	var tokens []postgres.APIToken
	if err := waitForDependencies(logger)(ctx, depPostgres, func(ctx context.Context) error {
		var err error
		tokens, err = b.store.APITokens(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	commit, err := sec.prepareWith(cfg, tokens)
	if err != nil {
		return nil, err
	}
	commit()
	// A reload builds the new security settings before anything changes
	// and refuses the whole reload if they fail (all or nothing).
	w.AddPreparer("api security (auth, policy, acl)", sec.prepare, config.PartPrincipals, config.PartRules, config.PartACL)
	acts, err := watchActions(w)
	if err != nil {
		return nil, err
	}
	reload := func(ctx context.Context, by, confirm string) (config.ReloadResult, error) {
		return w.ReloadWith(ctx, config.ReloadOptions{Confirm: confirm, By: by})
	}
	b.metrics.WatchQueues(b.store.QueueDepths)
	b.metrics.WatchFleet(fleetSources(b))
	b.metrics.WatchForeignGenerations(func() uint64 { n, _ := b.queue.ForeignGenerations(); return n })
	in := intake.New(b.store, b.queue, func() intake.Authorizer { return sec.policy.Load() },
		intake.Options{Limits: func() order.Limits { return w.Current().OrderLimits() },
			Retention: func() time.Duration { return w.Current().Retention },
			Metrics:   b.metrics,
			Actions:   acts.authorizer,
			Screen: func(o *order.Order) error {
				c := w.Current().Worker
				deny := c.EnvDeny
				if len(deny) == 0 {
					deny = config.DefaultEnvDeny()
				}
				return order.Screen(o, deny, c.EnvAllow, c.ForbiddenChars)
			}}, logger)
	presence := b.presence
	if presence == nil {
		presence = api.NewPresence(b.store, logger)
	}
	// Set below, before the API serves: /v1/status reads it.
	var apiCert *servedCertificate
	srv := api.New(api.Deps{
		Store: b.store, Queue: b.queue, Intake: in, Logger: logger, Version: binaryVersion(), Metrics: b.metrics,
		Presence: presence,
		PostgresDown: func() string {
			if b.pgNotStarting != nil {
				if n, ok := b.pgNotStarting(); ok {
					return n.Public()
				}
			}
			return ""
		},
		SharedLimits: b.rate,
		Auth:         func() api.Authenticator { return sec.authn.Load() },
		Settings: func() api.Settings {
			c := w.Current()
			return api.Settings{MaxBodyBytes: c.HTTP.MaxBodyBytes, MaxWait: c.HTTP.MaxWait, ACL: sec.acl.Load(),
				RatePerIP: c.Limits.RatePerIP, RatePerPrincipal: c.Limits.RatePerPrincipal, MetricsPublic: c.HTTP.MetricsPublic,
				MaxStreams: c.Limits.MaxStreamsPerPrincipal,
				RateShared: c.Limits.RateShared}
		},
		Status: func() map[string]any {
			st := w.Status()
			m := map[string]any{"config": st, "config_drift": st.Drift}
			if k := sec.authn.Load().JWKSStatus(); k != nil {
				m["jwks"] = k
			}
			m["nats"] = b.queue.StoringStatus()
			if r := in.RestoreStatus(); r != nil {
				m["postgres_restored"] = r
			}
			if b.pgNotStarting != nil {
				if n, ok := b.pgNotStarting(); ok {
					m["postgres_not_starting"] = n
				}
			}
			if apiCert != nil {
				m["api_certificate"] = apiCert.status()
			}
			return m
		},
		Reload:  reload,
		Actions: acts.deps(b.queue),
		Runbooks: &api.RunbookDeps{Store: b.store,
			Config: func() config.Runbooks { return w.Current().Runbooks }},
	})
	mountCompat(srv, w, sec)
	var tlsConfig *tls.Config
	if cfg.HTTP.TLSCert != "" {
		// Loaded before the listener opens: ServeTLS loads the pair only
		// once serving, and its error left a process that had said "api
		// listening" (and READY=1) holding a port it never accepted on.
		apiCert, err = newAPICertificate(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, logger)
		if err != nil {
			return nil, fmt.Errorf("http.tls_cert and http.tls_key: %w", err)
		}
		// Served through GetCertificate, so that a reload or a renewal
		// on disk changes the pair without a restart (apicert.go).
		tlsConfig = &tls.Config{GetCertificate: apiCert.GetCertificate}
		w.AddPreparer("API certificate", apiCert.prepare)
		b.metrics.WatchAPICertificate(apiCert.notAfter)
	}
	if ln == nil {
		if ln, err = listenAPI(cfg.Listen, logger); err != nil {
			return nil, err
		}
	}
	// Connections are bounded before anything reads them: each holds a
	// file descriptor of the process the worker and the PostgreSQL and
	// NATS connections need too (security.md, "Rate limits").
	autoConns := api.AutoMaxConnections()
	ln = api.ConnLimitListener(ln, func() api.ConnLimits {
		h := w.Current().HTTP
		total := h.MaxConnections
		if total == 0 {
			total = autoConns
		}
		acl := sec.acl.Load()
		return api.ConnLimits{Total: total, PerIP: h.MaxConnectionsPerIP, Trusted: acl.FromTrustedProxy}
	}, logger)
	ln = api.ErrorEnvelopeListener(ln)
	// Its cause says a request it ends was cut by the stop (api.ErrStopping).
	rctx, cancelCause := context.WithCancelCause(context.WithoutCancel(ctx))
	cancel := func() { cancelCause(api.ErrStopping) }
	r := &apiRunner{cancel: cancel, URL: "http://" + ln.Addr().String()}
	r.srv = &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.HTTP.WriteTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    api.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return rctx },
		// net/http's own complaints (TLS handshakes, accept errors) come
		// out in the configured log format too.
		ErrorLog:  slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig: tlsConfig,
	}
	r.wg.Add(3)
	go func() { defer r.wg.Done(); presence.Run(rctx) }()
	go func() { defer r.wg.Done(); in.Run(rctx) }()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := srv.RunNATSIntake(rctx); err != nil {
			logger.Error("nats intake stopped", "error", err)
		}
	}()
	go func() {
		defer r.wg.Done()
		var err error
		if tlsConfig != nil {
			err = r.srv.ServeTLS(ln, "", "")
		} else {
			err = r.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server", "error", err)
		}
	}()
	if apiCert != nil {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); apiCert.run(rctx, certCheckEvery) }()
	}
	// The drift check runs as long as the API that reports it (DESIGN §4.7).
	r.wg.Add(2)
	go func() { defer r.wg.Done(); _ = w.Run(rctx) }()
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(tokenRefresh)
		defer tick.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
				sec.refreshTokens(rctx, logger)
			}
		}
	}()
	if cfg.HTTP.TLSCert != "" {
		r.URL = "https://" + ln.Addr().String()
		r.cert = apiCert
	}
	return r, nil
}

// shutdown stops taking requests, ends long waits, and stops the intake.
func (r *apiRunner) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.cancel() // ends ?wait requests so Shutdown does not wait for them
	_ = r.srv.Shutdown(ctx)
	r.wg.Wait()
}

// workerRunner is a running worker.
type workerRunner struct {
	cancel context.CancelFunc
	// done is closed once the worker's Run returned, with err set: both
	// waitForSignals (a worker that ends on its own) and stop read it.
	done chan struct{}
	err  error
}

// livePolicy is the worker's host policy, swapped whole on a config
// reload; an order is checked against one version of it.
type livePolicy struct {
	p atomic.Pointer[hostpolicy.Policy]
}

func (l *livePolicy) Prepare(o *order.Order) (*hostpolicy.Prepared, error) {
	return l.p.Load().Prepare(o)
}

// OrderCgroup is where an order runs when orders get their own cgroups,
// so a successor can end one whose process was never recorded.
func (l *livePolicy) OrderCgroup(id uuid.UUID) string { return l.p.Load().OrderCgroup(id) }

// RemoveRunDirs removes the run directories a script order left when its
// worker stopped mid-run, so a successor can remove them once it reaped
// the order's processes.
func (l *livePolicy) RemoveRunDirs(id uuid.UUID) ([]string, error) {
	return l.p.Load().RemoveRunDirs(id)
}

// startWorker runs the worker of cfg.Host. With reloads set, a reloaded
// config's worker section replaces the host policy at once (one that does
// not build refuses the reload, and the running policy stays).
func startWorker(ctx context.Context, cfg config.Config, b *backend, logger *slog.Logger, reloads *config.Watcher) (*workerRunner, error) {
	return startWorkerWith(ctx, cfg, b, logger, reloads, executor.New(logger), nil)
}

// startAdoptingWorker is startWorker for a process that runs nothing but
// this worker's orders (`orderly worker`, serve without a managed
// PostgreSQL): it becomes their orphans' subreaper, so that an order's
// process that left its session is ended with the order
// (executor.AdoptOrphans). Where the kernel refuses, the worker says so
// and runs without. Once the worker stopped (or did not start), the
// process is no subreaper any more: one that goes on after its worker (a
// test binary, an embedding program) would be handed every later orphan
// of what it starts and never reap it (executor.StopAdopting). Its
// orders' commands start with ordersSlack as their timer slack, when > 0
// (executor.OrdersTimerSlack).
func startAdoptingWorker(ctx context.Context, cfg config.Config, b *backend, logger *slog.Logger, reloads *config.Watcher, ordersSlack time.Duration) (*workerRunner, error) {
	ex := executor.New(logger)
	ex.OrdersTimerSlack(ordersSlack)
	if err := ex.AdoptOrphans(); err != nil {
		logger.Warn("orders' processes that leave their session are not found without a cgroup", "host", cfg.Host, "error", err)
	} else {
		logger.Info("the worker is its orders' subreaper: their processes that leave their session end with them", "host", cfg.Host)
	}
	stopAdopting := func() {
		if err := ex.StopAdopting(); err != nil {
			logger.Warn("the process stays its orders' subreaper after the worker stopped", "host", cfg.Host, "error", err)
		}
	}
	r, err := startWorkerWith(ctx, cfg, b, logger, reloads, ex, stopAdopting)
	if err != nil {
		stopAdopting()
	}
	return r, err
}

// startWorkerWith is startWorker with the executor that runs the orders;
// stopped, if not nil, runs once the worker's Run returned, before its
// end is reported on done.
func startWorkerWith(ctx context.Context, cfg config.Config, b *backend, logger *slog.Logger, reloads *config.Watcher, ex *executor.Executor, stopped func()) (*workerRunner, error) {
	if !order.ValidHost(cfg.Host) {
		return nil, fmt.Errorf("host id %q is not valid: use 1-128 characters of [A-Za-z0-9_-] (set --host)", cfg.Host)
	}
	// An order's output past 1 MiB waits for its result write in an
	// unnamed file ($TMPDIR, else /tmp), not in the heap that serve
	// shares with the API and NATS's live stream (executor.Spill).
	ex.SpillTo(os.TempDir())
	// A connection PostgreSQL dropped since the backend connected (a
	// restart) ended the start here, `check login: unexpected EOF`, where
	// the connect itself waits: waited out the same way. A login confined
	// to other hosts, or one missing a grant, still ends it at once.
	if err := waitForDependencies(logger)(ctx, depPostgres, func(ctx context.Context) error {
		return b.store.CheckLogin(ctx, cfg.Host)
	}); err != nil {
		return nil, err
	}
	hp, err := hostpolicy.FromConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("worker policy: %w", err)
	}
	// Say which containment orders get: "auto" falls back quietly
	// otherwise, and process groups do not hold a daemonizing command.
	if parent, note := hp.Cgroup(); parent != "" {
		logger.Info("orders run in their own cgroups", "host", cfg.Host, "parent", parent, "reason", note)
	} else if cfg.Worker.Cgroup != "" && cfg.Worker.Cgroup != executor.CgroupOff {
		logger.Warn("orders run in process groups only", "host", cfg.Host, "reason", note)
	} else {
		logger.Info("orders run in process groups only", "host", cfg.Host, "reason", note)
	}
	warnUntrusted := func(hp *hostpolicy.Policy) {
		for _, why := range hp.UntrustedDirs() {
			logger.Warn("commands in this command_path directory are refused", "host", cfg.Host, "reason", why)
		}
		for _, why := range hp.UntrustedInterpreters() {
			logger.Warn("scripts run with this interpreter are refused", "host", cfg.Host, "reason", why)
		}
	}
	warnUntrusted(hp)
	policy := &livePolicy{}
	policy.p.Store(hp)
	if reloads != nil {
		// Built before the reload commits: a worker section this host
		// cannot use refuses the whole reload, API included.
		// The host stays this worker's: a reloaded config may leave it
		// to the default (serve's short hostname), which it does not hold.
		reloads.AddPreparer("worker host policy", func(_ context.Context, c config.Config) (func(), error) {
			c.Host = cfg.Host
			hp, err := hostpolicy.FromConfig(c)
			if err != nil {
				return nil, fmt.Errorf("worker policy: %w", err)
			}
			return func() { policy.p.Store(hp); warnUntrusted(hp) }, nil
		}, config.PartWorker)
		reloads.AddCheck("worker host policy", func(c config.Config) error {
			c.Host = cfg.Host
			return hostpolicy.Check(c)
		})
	}
	markKey, err := claimMarkKey(b.markSeed)
	if err != nil {
		return nil, err
	}
	if markKey == nil {
		logger.Warn("no NATS nkey or credentials file: the host's claim mark and lease are written unsigned and trusted as read, so any connection to NATS can forge them "+
			"and have this worker cancel the orders PostgreSQL holds queued as restored from a backup, or stop its claims (docs/security.md)", "host", cfg.Host)
	}
	w := worker.New(worker.Options{Host: cfg.Host, Version: binaryVersion(), Heartbeat: cfg.NATS.Heartbeat,
		AckWait: cfg.NATS.AckWait, ShutdownGrace: cfg.Worker.ShutdownGrace, Metrics: b.metrics, ClaimMarkKey: markKey,
		// systemctl status says whether this worker serves its host or
		// stands by, not the last dependency its start waited for.
		// While the servers refuse its credential, it says that instead.
		Status: b.refusal.status},
		b.store, b.queue, policy, ex, logger)
	b.refusal.start(func(s string) { notifySystemd("STATUS="+oneLine(s), logger) })
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := serveChoices(wctx, b.queue, cfg.Host, policy); err != nil {
		cancel()
		return nil, err
	}
	return runWorker(wctx, cancel, w.Run, stopped), nil
}

// runWorker runs run (a worker's Run) until ctx, which cancel ends,
// and calls stopped after it.
func runWorker(ctx context.Context, cancel context.CancelFunc, run func(context.Context) error, stopped func()) *workerRunner {
	r := &workerRunner{cancel: cancel, done: make(chan struct{})}
	go func() {
		err := run(ctx)
		if stopped != nil {
			stopped()
		}
		r.err = err
		close(r.done)
	}()
	return r
}

// stop asks the worker to stop and waits: the current order may finish
// within the shutdown grace, then it is killed.
func (r *workerRunner) stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// defaultHost is the short hostname made into a valid host id.
func defaultHost() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	h, _, _ = strings.Cut(h, ".")
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	return string(b)
}
