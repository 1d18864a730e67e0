package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/internal/secretfile"
	"github.com/orderly-run/orderly/migrations"
	"github.com/orderly-run/orderly/worker/executor"
	"github.com/orderly-run/orderly/worker/hostpolicy"
)

func (a *app) serveCommand() *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "All-in-one for one machine: embedded NATS, managed PostgreSQL, the API and a worker for this host",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.serve(cmd, f)
		},
	}
	f.bind(cmd, "data_dir", "listen", "host", "database_url", "nats.url", "nats.workers")
	return cmd
}

func (a *app) serve(cmd *cobra.Command, f *serverFlags) error {
	ctx := cmd.Context()
	w, logger, err := a.load(cmd, f, serveCompatHosts())
	if err != nil {
		return err
	}
	a.boundMemory(ctx, w)
	cfg := w.Current()
	if err := adminNameFree(cfg); err != nil {
		// Found when the runtime tokens were loaded, it came after an
		// initdb, NATS and the migrations, and named no token to rename.
		return err
	}
	if cfg.HTTP.TLSCert != "" {
		// Found when the API started, after an initdb, NATS and the
		// migrations (the API loads the pair again then).
		if _, err := tls.LoadX509KeyPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey); err != nil {
			return fmt.Errorf("http.tls_cert and http.tls_key: %w", err)
		}
	}
	if cfg.Host == "" {
		cfg.Host = defaultHost()
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// Resolved once: a symlink on the way, in a directory another user
	// may write to, could be pointed elsewhere between the check below
	// and a later open (the seeds are read again on SIGHUP).
	if dataDir, err = filepath.EvalSymlinks(dataDir); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := dataDirOwn(dataDir); err != nil {
		return err
	}
	if err := dataDirEntriesOwn(dataDir); err != nil {
		return err
	}
	unlock, err := lockDataDir(dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	// The API's port (and the embedded NATS's) is found taken before
	// anything starts: found when the API started, it cost a PostgreSQL
	// start (an initdb the first time), and the worker, already running,
	// could take an order of its host only to be stopped under it.
	apiListener, err := listenAPI(cfg.Listen, logger)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: is another orderly serve running? set --listen", err)
	}
	if err != nil {
		return err
	}
	defer apiListener.Close() // after a failed start; the API closes it when it stops
	var natsHost string
	var natsPort int
	if cfg.NATS.URL == "" {
		if natsHost, natsPort, err = splitHostPort(cfg.NATS.Listen); err != nil {
			return fmt.Errorf("nats.listen: %w", err)
		}
		checkHost := natsHost
		if checkHost == "" {
			checkHost = "127.0.0.1" // natsembed's default
		}
		if natsPort == 0 {
			natsPort = -1 // any free port, as for listen
		} else if err := natsembed.CheckFree(net.JoinHostPort(checkHost, strconv.Itoa(natsPort))); err != nil {
			return err
		}
	}
	var natsTLS *tls.Config
	var natsCert *servedCertificate
	warnListenTLSIgnored(cfg.NATS, logger)
	if cfg.NATS.URL == "" && cfg.NATS.ListenTLSCert != "" {
		// Found when the embedded server started, it would come after
		// an initdb, as the API's pair would.
		if natsTLS, natsCert, err = embeddedNATSTLS(cfg.NATS, logger); err != nil {
			return err
		}
	}

	// Shutdown runs these in reverse: HTTP, worker, NATS drain, embedded
	// NATS, PostgreSQL pool, managed PostgreSQL (STYLE §5).
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	// A managed PostgreSQL's postmaster is daemonized by pg_ctl: a
	// subreaper serve would be handed it, and must not take it for an
	// order's orphan (startAdoptingWorker).
	managedPG := cfg.DatabaseURL == ""
	var pgNotStarting func() (pgembed.NotStarting, bool) // the managed cluster's failed starts
	if managedPG {
		pgDir := filepath.Join(dataDir, "pg")
		pg, err := pgembed.Start(ctx, pgembed.Options{Dir: pgDir, Fsync: true, Logger: logger, TimerSlack: ordersTimerSlack(a.environ)})
		if errors.Is(err, pgembed.ErrUnreachable) && os.Geteuid() == 0 {
			// A data dir under a private home (/root is 0700): the postgres
			// user cannot reach it, so the cluster lives in /var/lib/orderly,
			// keyed by the data dir so each data dir keeps its own.
			sum := sha256.Sum256([]byte(dataDir))
			_ = os.Remove(pgDir) // the empty directory of the attempt, if that is what it left
			pgDir = filepath.Join("/var/lib/orderly", "pg-"+hex.EncodeToString(sum[:6]))
			logger.Warn("the postgres user cannot reach the data dir; keeping the managed PostgreSQL elsewhere", "data_dir", dataDir, "pg_dir", pgDir)
			if err := os.MkdirAll(filepath.Dir(pgDir), 0o755); err != nil {
				return err
			}
			pg, err = pgembed.Start(ctx, pgembed.Options{Dir: pgDir, Fsync: true, Logger: logger, TimerSlack: ordersTimerSlack(a.environ)})
		}
		if err != nil {
			if errors.Is(err, pgembed.ErrNoBinaries) {
				return err
			}
			return fmt.Errorf("managed postgresql: %w", err)
		}
		cleanups = append(cleanups, func() {
			if err := pg.Stop(context.Background()); err != nil {
				logger.Error("stop postgresql", "error", err)
			}
		})
		// A postmaster that dies (OOM killer, pg_ctl stop by hand) is
		// started again; supervision ends before the Stop above, and not
		// at the stop signal (ctx): the worker's stop still writes the
		// running order's result, which a postmaster dead at the stop
		// lost (given up, the order interrupted by the next serve with
		// none of its output: TestFaultsServeLongOrder).
		superviseCtx, stopSupervising := context.WithCancel(context.WithoutCancel(ctx))
		supervised := make(chan struct{})
		go func() { defer close(supervised); pg.Supervise(superviseCtx, 2*time.Second) }()
		cleanups = append(cleanups, func() { stopSupervising(); <-supervised })
		pgNotStarting = pg.NotStarting
		cfg.DatabaseURL = pg.DSN()
	}
	var natsCreds *natsembed.Credentials
	var embedded *natsembed.Server
	var natsShown string // the URL the banner gives workers: cfg.NATS.URL but for the embedded server
	var inProcess []nats.Option
	externalNATS := cfg.NATS.URL != ""
	if !externalNATS {
		// Every connection authenticates, with its role's permissions: the
		// commands orderly runs are local processes too (DESIGN §4.7).
		creds, err := natsembed.EnsureCredentials(filepath.Join(dataDir, "nats-creds"), cfg.Host, cfg.NATS.Workers)
		if err != nil {
			return err
		}
		opts := embeddedNATS(dataDir, natsHost, natsPort, logger, creds)
		opts.TLS = natsTLS
		ns, err := natsembed.Start(opts)
		if err != nil {
			return err
		}
		cleanups = append(cleanups, ns.Shutdown)
		embedded = ns
		natsURL := ns.ClientURL()                             // tls:// with nats.listen_tls_cert
		natsShown = shownURL(natsURL, natsCert.leaf(), false) // for workers of other machines
		if natsCert != nil {
			w.AddPreparer("embedded NATS certificate", natsCert.prepare)
			certCtx, stopCert := context.WithCancel(ctx)
			checked := make(chan struct{})
			go func() { defer close(checked); natsCert.run(certCtx, certCheckEvery) }()
			cleanups = append(cleanups, func() { stopCert(); <-checked })
		}
		warnEmbeddedNATSCleartext(natsHost, cfg.NATS, logger)
		// serve's own connection is in-process (below) and speaks no TLS
		// (nats-server lets an in-process client choose): nothing it
		// sends leaves the process, and a handshake over the pipe would
		// check the certificate against a name (0.0.0.0) it may not hold.
		cfg.NATS.URL = "nats://" + strings.TrimPrefix(strings.TrimPrefix(natsURL, "tls://"), "nats://")
		cfg.NATS.Nkey, cfg.NATS.Credentials = creds.Serve, ""
		// The client TLS files are for an external nats.url, as
		// nats.nkey is.
		cfg.NATS.TLSCA, cfg.NATS.TLSCert, cfg.NATS.TLSKey = "", "", ""
		natsCreds = creds
		// serve's own API and worker talk to the embedded server through
		// an in-process pipe: same authentication and permissions, no
		// loopback socket (about ten messages per order, decisions.md).
		inProcess = append(inProcess, nats.InProcessServer(ns.InProcess()))
		w.AddPreparer("embedded NATS credentials", natsCredentialReloader(ns, creds, cfg.Host, logger))
	}
	// An upgraded serve migrates its own database: say so, with what.
	applied, err := migrations.Up(ctx, cfg.DatabaseURL, func(err error) {
		if held := (*migrations.LockHeld)(nil); errors.As(err, &held) {
			logger.Warn("waiting for the migration lock that another orderly holds", "error", err)
			return
		}
		logger.Warn("a migration waits for a table lock that another session holds; trying again", "error", err)
	})
	if len(applied) > 0 {
		logger.Info("schema migrated", "applied", applied)
	}
	if err != nil {
		// An external database_url's first contact is this migration.
		return postgresConnectError(err)
	}
	// The migration reached PostgreSQL: a restart from here on (a
	// managed one's supervisor starts it again within seconds) is waited
	// out as api's and worker's starts wait, where each of these steps
	// ended the start. The embedded NATS is tried once (it is in the
	// process: nothing restarts it); an external one's steps after the
	// connect are waited for as api's are.
	pgWait := waitForPostgres(logger)
	backendWait := pgWait
	if externalNATS {
		backendWait = waitAfterNATSConnect(logger)
	}
	b, err := openBackendWith(ctx, cfg, "orderly-serve", roleAPI, backendWait, logger, inProcess...)
	if err != nil {
		return stoppedWhileWaiting(ctx, err, logger)
	}
	cleanups = append(cleanups, b.close)
	if embedded != nil {
		// Its JetStream restarted in place (a full store with room
		// again) loses the live stream, and no connection sees it.
		b.queue.FollowRestarts(embedded.JetStreamRestarts)
	}
	b.pgNotStarting = pgNotStarting
	if natsCreds != nil {
		// The claim mark's key is the host's, not serve's connection's: a
		// standby worker of this host (with the worker seed serve wrote
		// for it) checks the mark serve's worker signed, and signs its own.
		b.markSeed = natsCreds.Workers[cfg.Host]
		// The publish generation's key is the API's, not serve's
		// connection's: an extra `orderly api` (with the API seed serve
		// wrote) checks the generation serve's API signed, and signs its
		// own.
		key, err := generationKey(natsCreds.API)
		if err != nil {
			return err
		}
		b.queue.SignGenerations(key)
	}
	if serveBackendOpened != nil {
		serveBackendOpened(b)
	}

	tokenFile := filepath.Join(dataDir, "admin.token")
	if err := pgWait(ctx, depPostgres, func(ctx context.Context) error {
		return ensureAdminToken(ctx, b.store, tokenFile)
	}); err != nil {
		return stoppedWhileWaiting(ctx, err, logger)
	}
	if ordersRunAsItself(cfg.Worker) {
		logger.Warn("orders that name no user run as serve's own user, who owns the data dir: "+
			"such an order can read admin.token and the NATS seeds and reach the managed PostgreSQL, "+
			"so a command that reads a file the client names acts as admin; run serve as root with "+
			"worker.default_user set to a user of its own (security.md)",
			"data_dir", dataDir, "uid", os.Getuid())
	}
	// Before the worker claims: the orders a killed serve's compat
	// clients waited for are canceled at their claim.
	if err := pgWait(ctx, depPostgres, func(ctx context.Context) (err error) {
		b.presence, err = takeOverPresence(ctx, b.store, dataDir, logger)
		return err
	}); err != nil {
		return stoppedWhileWaiting(ctx, err, logger)
	}
	var wr *workerRunner
	if managedPG {
		ex := executor.New(logger)
		ex.OrdersTimerSlack(ordersTimerSlack(a.environ))
		wr, err = startWorkerWith(ctx, cfg, b, logger, w, ex, nil)
	} else {
		wr, err = startAdoptingWorker(ctx, cfg, b, logger, w, ordersTimerSlack(a.environ))
	}
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() {
		if err := wr.stop(); err != nil {
			logger.Error("worker stopped", "error", err)
		}
	})
	ar, err := startAPIOn(ctx, w, b, logger, apiListener)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, ar.shutdown)

	var natsCredsDir string
	var workers []string
	if natsCreds != nil {
		natsCredsDir, workers = natsCreds.Dir, slices.Sorted(maps.Keys(natsCreds.Workers))
	}
	printServeBanner(a.stdout, shownURL(ar.URL, ar.cert.leaf(), true), tokenFile, cfg.Host, cmp.Or(natsShown, cfg.NATS.URL), natsCredsDir, cfg.DatabaseURL, workers)
	if natsTLS != nil {
		printServeNATSTLS(a.stdout, cfg.NATS)
	}

	return a.waitForSignals(ctx, w, logger, wr, b.store)
}

// serveBackendOpened, set by a test only, is called with serve's backend
// once it is open, before the steps that follow it.
var serveBackendOpened func(*backend)

// schemaCheck is how often a running server command reads the schema
// version again (migrations.RolledBack): once a minute, as a worker
// touches its host's row, so a fleet's idle load on PostgreSQL grows by
// one small read per process and minute (docs/scaling.md).
var schemaCheck = time.Minute

// schemaChecked, set by a test only, is called after each periodic
// check of the schema with the store it read and what the check found.
var schemaChecked func(store *postgres.Store, err error)

// waitForSignals reloads the config on SIGHUP and returns when ctx ends
// (SIGINT/SIGTERM), the worker fails, or the schema of store (nil: not
// checked) was rolled back below this binary's.
func (a *app) waitForSignals(ctx context.Context, w reloader, logger interface {
	Info(string, ...any)
	Error(string, ...any)
}, wr *workerRunner, store *postgres.Store) error {
	hup := a.hup
	if hup == nil {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
	}
	defer signal.Stop(hup)
	var (
		schemaTick    <-chan time.Time
		schemaSuspect <-chan struct{}
	)
	if store != nil {
		t := time.NewTicker(schemaCheck)
		defer t.Stop()
		schemaTick = t.C
		schemaSuspect = postgres.SchemaSuspect()
	}
	notifySystemd(sdReady, logger)
	defer notifySystemd(sdStopping, logger)
	for {
		select {
		case <-ctx.Done():
			logger.Info("shutting down")
			return nil
		case <-schemaSuspect:
			// A statement failed on a column or table that is gone: read
			// the version now, as the tick would; until the tick, up to a
			// minute of failed submissions and claims (hF11's downgrade).
			schemaSuspect = postgres.RearmSchemaSuspect(schemaSuspect)
			if err := checkRolledBack(ctx, store); err != nil {
				return err
			}
		case <-schemaTick:
			err := checkRolledBack(ctx, store)
			if schemaChecked != nil {
				schemaChecked(store, err)
			}
			if err != nil {
				return err
			}
		case <-hup:
			// The watcher logs an applied reload, with what changed.
			if _, err := w.Reload(); err != nil {
				logger.Error("reload refused; keeping the running config", "error", err)
			}
		case <-workerDone(wr):
			if wr.err != nil {
				return fmt.Errorf("worker: %w", wr.err)
			}
			return nil
		}
	}
}

// checkRolledBack reads the schema version of store and refuses one
// rolled back below this binary's. A version it cannot read (PostgreSQL
// unreachable) is left to the next check.
func checkRolledBack(ctx context.Context, store *postgres.Store) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	have, err := store.SchemaVersion(ctx)
	if err != nil {
		return nil
	}
	return migrations.RolledBack(have)
}

type reloader interface {
	Reload() (bool, error)
}

func workerDone(wr *workerRunner) <-chan struct{} {
	if wr == nil {
		return nil
	}
	return wr.done
}

// ensureAdminToken creates the admin token on first start: the token goes
// to a 0600 file for the operator, only its SHA-256 goes to PostgreSQL.
// An existing file must be the serve user's alone, as the NATS seeds must
// (natsembed): a copy restored without its mode (cp under umask 022 makes
// it 0644) let every local user, and every order run on this machine as
// nobody, read a token that runs anything anywhere as anyone. It must be
// the file serve wrote (secretfile.Read): one another user planted while
// the data dir was theirs to write (a token they know, 0600, theirs), a
// symbolic or hard link to a file of serve's user, or a FIFO (serve
// blocked on it for good) was taken, its hash made admin's. It must also
// hold a token a client could send.
func ensureAdminToken(ctx context.Context, store *postgres.Store, path string) error {
	b, err := secretfile.Read(path)
	if err == nil {
		if !auth.Sendable(strings.TrimSpace(string(b))) {
			return fmt.Errorf("admin token %s holds no token a client could send: delete it to have a new one made", path)
		}
		// The file is the admin token (removing it rotates it), so its
		// hash wins: a database restored from a backup taken before a
		// rotation holds the hash rotated away, and the file's token was
		// refused while the old one, perhaps the leaked one, worked again.
		return store.ReplaceAPIToken(ctx, postgres.APIToken{Name: serveAdminToken,
			SHA256: auth.HashToken(strings.TrimSpace(string(b))), Roles: []string{"admin"}})
	}
	if se, ok := errors.AsType[*secretfile.Error](err); ok {
		if se.Shared {
			return fmt.Errorf("admin token %s: chmod 600 it, or delete it to have a new one made", se)
		}
		return fmt.Errorf("admin token %s: serve did not leave it so, and does not take it as its own; delete it to have a new one made", se)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read admin token: %w", err)
	}
	tok, sum := auth.NewToken()
	if err := writeTokenFile(path, tok); err != nil {
		return fmt.Errorf("write admin token: %w", err)
	}
	created, err := store.EnsureAPIToken(ctx, postgres.APIToken{Name: serveAdminToken, SHA256: sum, Roles: []string{"admin"}})
	if err != nil {
		return err
	}
	if !created {
		// The database already has an admin token (the file was removed):
		// rotate it so the new file works.
		return store.ReplaceAPIToken(ctx, postgres.APIToken{Name: serveAdminToken, SHA256: sum, Roles: []string{"admin"}})
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", p)
	}
	return host, port, nil
}

// printServeBanner is what serve prints once it runs: where its API,
// token, NATS and PostgreSQL are, and how to add a worker. It goes to
// stdout, which under systemd is the journal: the URLs are printed with
// their passwords and NATS tokens hidden (the add-a-worker line printed
// an external database_url whole).
func printServeBanner(w io.Writer, apiURL, tokenFile, host, natsURL, natsCredsDir, dsn string, workers []string) {
	natsShown := redactNATS(natsURL)
	natsLine, workerCreds := natsShown, ""
	if natsCredsDir != "" {
		natsLine += fmt.Sprintf("   (credentials: %s, one nkey seed per role)", natsCredsDir)
		workerCreds = fmt.Sprintf(" --nats-nkey %s", filepath.Join(natsCredsDir, natsembed.WorkerFile("<id>")))
	}
	fmt.Fprintf(w, `orderly %s is running
  API:         %s
  web UI:      %s/ui/   (sign in with the admin token)
  admin token: %s   (curl -H "Authorization: Bearer $(cat %s)" %s/v1/hosts)
`, binaryVersion(), apiURL, apiURL, tokenFile, tokenFile, apiURL)
	if env := clientEnv(apiURL, tokenFile); env != "" {
		fmt.Fprintf(w, "  client:      export %s   (then orderly submit, ls, hosts: docs/cli.md)\n", env)
	}
	fmt.Fprintf(w, `  worker host: %s
  NATS:        %s
  PostgreSQL:  %s
  add a worker: orderly worker --host <id> --nats-url %s%s --database-url '%s'
`, host, natsLine, redactDSN(dsn), natsShown, workerCreds, redactDSN(dsn))
	if natsCredsDir != "" {
		fmt.Fprintf(w, "                (<id> is one of nats.workers / --nats-workers: %s)\n", strings.Join(workers, ", "))
	}
}

// clientEnv is what the client commands need to reach this serve when
// they would not find it by themselves: ORDERLY_URL when the API is not
// on the client's default address, ORDERLY_DATA_DIR (absolute, so it
// works from any directory) when the token is not in ./data. "" when
// neither: `make run` as the README has it. A newcomer who ran serve on
// other ports (deploy.md, "A second serve on one machine") found out
// from two errors in turn.
func clientEnv(apiURL, tokenFile string) string {
	var env []string
	if apiURL != defaultClientURL {
		env = append(env, "ORDERLY_URL="+shellQuote(apiURL))
	}
	// serve names its token file by an absolute path (the data dir made
	// absolute at start), so it is compared with ./data made absolute the
	// same way: compared as written, `make run`'s own ./data printed the
	// line the README says comes only off the defaults.
	dir, def := filepath.Dir(tokenFile), defaultDataDir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if abs, err := filepath.Abs(def); err == nil {
		def = abs
	}
	if filepath.Clean(dir) != filepath.Clean(def) {
		env = append(env, "ORDERLY_DATA_DIR="+shellQuote(dir))
	}
	return strings.Join(env, " ")
}

// redactDSN is database_url as serve's banner prints it (config.RedactDSN).
func redactDSN(dsn string) string { return config.RedactDSN(dsn) }

// redactNATS is nats.url as serve's banner and warnings print it
// (config.RedactNATS).
func redactNATS(urls string) string { return config.RedactNATS(urls) }

// dataDirOwn refuses a data dir that another user owns or may write to.
// serve takes the admin.token and the NATS seeds it finds there as its
// own: in a directory another user made (./data under /tmp, a data dir
// made world-writable by a umask of 000 or a chmod), that user planted a
// token of their choosing, 0600, and serve made its hash admin's, or
// seeds that made the planter serve's role on the bus.
func dataDirOwn(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("data dir %s is owned by uid %d, not by the user serve runs as (uid %d): the admin token and NATS credentials found there would be that user's choice; chown it, or use another --data-dir", dir, sys.Uid, os.Geteuid())
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("data dir %s may be written by other users (mode %o): they could plant its admin token and NATS credentials; chmod go-w it", dir, perm)
	}
	return dataDirAncestorsOwn(dir)
}

// dataDirAncestorsOwn refuses a data dir below a directory that someone
// other than root and serve's user may write to (unless it is sticky, as
// /tmp is): they could rename the data dir away between serve's checks
// and its use of what is in it, and put one of theirs in its place (a
// nats store and a pg cluster of their making, which serve then runs on;
// its postgresql.conf's commands run as postgres). The worker's rule for
// a command_path directory's ancestors (hostpolicy.UntrustedAncestors).
func dataDirAncestorsOwn(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if why := hostpolicy.UntrustedAncestors(abs, os.Geteuid(), fmt.Sprintf("the user serve runs as (uid %d)", os.Geteuid())); why != "" {
		return fmt.Errorf("data dir %s: %s: another user could put a data dir of theirs in its place while serve starts; chown it or chmod go-w (or +t) it, or use another --data-dir", dir, why)
	}
	return nil
}

// dataDirEntriesOwn refuses a data dir with an entry another user made:
// the data dir is serve's now, but it may have been theirs to write
// before (made under a umask of 000, or in /tmp, and chmodded or chowned
// since), and what they put there stays theirs whatever its mode. A nats
// directory of theirs held the JetStream store serve's bus ran on, a pg
// directory of theirs a cluster of their making (its postgresql.conf's
// commands run as postgres). Each entry must be serve's user's, or, for
// pg when serve runs as root, the postgres user's, to whom serve gives it.
func dataDirEntriesOwn(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	pgUID := -1
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("postgres"); err == nil {
			pgUID, _ = strconv.Atoi(u.Uid)
		}
	}
	for _, e := range ents {
		fi, err := e.Info() // lstat: a link's own owner
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		sys, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || int(sys.Uid) == os.Geteuid() || (e.Name() == "pg" && int(sys.Uid) == pgUID) {
			continue
		}
		return fmt.Errorf("data dir %s holds %s, owned by uid %d, not by the user serve runs as (uid %d): another user put it there, and serve would take it as its own; delete it (or move it out) and start again",
			dir, e.Name(), sys.Uid, os.Geteuid())
	}
	return nil
}

// embeddedNATS is serve's nats-server: file storage fsynced on every write
// (DESIGN §2.4), so a PubAck means the order is on disk.
func embeddedNATS(dataDir, host string, port int, logger *slog.Logger, creds *natsembed.Credentials) natsembed.Options {
	return natsembed.Options{Dir: filepath.Join(dataDir, "nats"), Host: host, Port: port,
		SyncAlways: true, Logger: logger, Credentials: creds}
}

// writeTokenFile writes tok to path (mode 0600) whole or not at all: a
// write cut short (a full disk) left an empty file, and every later start,
// with room again, refused it ("holds no token a client could send")
// until the operator deleted it by hand. The token goes to a temporary
// file beside path, renamed over it once written.
func writeTokenFile(path, tok string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(tok + "\n") // CreateTemp made it 0600
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// serveAdminToken is the name serve keeps its own admin token under (in
// api_tokens, its secret in <data dir>/admin.token).
const serveAdminToken = "admin"

// adminNameFree refuses a config token named as serve's own admin token:
// the two would be one principal, sharing orders and policy rules. A
// Vigrid config imported as it is names its first token admin.
func adminNameFree(cfg config.Config) error {
	for i, t := range cfg.Auth.Tokens {
		if t.Name == serveAdminToken {
			return fmt.Errorf("auth.tokens[%d]: the name %q is the one orderly serve keeps for its own admin token (%s); "+
				"rename this token, and the policy rules and compat.vigrid.users entries that name it", i, serveAdminToken, "<data dir>/admin.token")
		}
	}
	return nil
}

// serveCompatHosts fills in serve's own host, its worker's, for the compat
// surfaces whose config names none (config.DefaultCompatHosts). The host
// is the one the first load gives (host, --host, or the short hostname),
// the one serve's worker takes up; a reload that changes host changes the
// worker's only at a restart, and so the surfaces'.
func serveCompatHosts() func(*config.Config) {
	var host string
	return func(c *config.Config) {
		if host == "" {
			host = cmp.Or(c.Host, defaultHost())
		}
		c.DefaultCompatHosts(host)
	}
}
