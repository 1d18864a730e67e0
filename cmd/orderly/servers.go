package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/migrations"
)

func (a *app) apiCommand() *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Run the stateless API against external NATS and PostgreSQL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			w, logger, err := a.load(cmd, f, nil)
			if err != nil {
				return err
			}
			a.boundMemory(ctx, w)
			b, err := openBackendWith(ctx, w.Current(), "orderly-api", roleAPI, waitForDependencies(logger), logger)
			if err != nil {
				return stoppedWhileWaiting(ctx, err, logger)
			}
			defer b.close()
			ar, err := startAPI(ctx, w, b, logger)
			if err != nil {
				return err
			}
			defer ar.shutdown()
			logger.Info("api listening", "url", ar.URL)
			return a.waitForSignals(ctx, w, logger, nil, b.store)
		},
	}
	f.bind(cmd, "listen", "database_url", "nats.url", "nats.nkey")
	return cmd
}

func (a *app) workerCommand() *cobra.Command {
	f := &serverFlags{}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the worker of one host against external NATS and PostgreSQL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			w, logger, err := a.load(cmd, f, nil)
			if err != nil {
				return err
			}
			// No API here: a reload removing the containment is applied
			// by a restart, not confirmed.
			w.RestartConfirms()
			a.boundMemory(ctx, w)
			defer a.oneProcessor()()
			cfg := w.Current()
			if cfg.Host == "" {
				cfg.Host = defaultHost()
			}
			// Once, before waiting for the database or NATS: an order
			// that reads a file it names reads the worker's credentials.
			if ordersRunAsItself(cfg.Worker) {
				logger.Warn("orders that name no user run as the worker's own user: such an order can read "+
					"the worker's NATS seed and pgpass file and act as this host's worker with them, "+
					"so a command that reads a file the client names hands them out; run the worker as root "+
					"with worker.default_user set to a user of its own (security.md)",
					"setting", "worker.default_user", "uid", os.Getuid(), "nkey", cfg.NATS.Nkey)
			}
			b, err := openBackendWith(ctx, cfg, "orderly-worker-"+cfg.Host, roleWorker, waitForDependencies(logger), logger)
			if err != nil {
				return stoppedWhileWaiting(ctx, err, logger)
			}
			defer b.close()
			// The metrics port first: a port taken must stop the worker
			// before it takes its host over.
			if addr := cfg.Worker.MetricsListen; addr != "" {
				stopMetrics, err := serveMetrics(addr, b, logger)
				if err != nil {
					return err
				}
				defer stopMetrics()
			}
			wr, err := startAdoptingWorker(ctx, cfg, b, logger, w, ordersTimerSlack(a.environ))
			if err != nil {
				return err
			}
			defer wr.stop()
			// The drift check, as the API runs it: a worker has no status
			// to report it on, so its "config drift" line is the report.
			dctx, stopDrift := context.WithCancel(ctx)
			drifted := make(chan struct{})
			go func() { defer close(drifted); _ = w.Run(dctx) }()
			defer func() { stopDrift(); <-drifted }()
			return a.waitForSignals(ctx, w, logger, wr, b.store)
		},
	}
	f.bind(cmd, "host", "database_url", "nats.url", "nats.nkey")
	return cmd
}

// oneProcessor runs a worker process's goroutines on one processor
// (GOMAXPROCS 1) unless the environment sets GOMAXPROCS, and returns what
// restores the previous setting (a command run inside a test process
// leaves nothing behind). A worker runs its host's orders one at a time
// and waits on PostgreSQL, NATS and the order's process in between: a
// second processor buys it nothing but a scheduler that spins a second
// thread up on each wake-up and hands goroutines between threads. With
// eight worker processes on two vCPUs, one processor each cut the CPU
// per order of orderly's processes by about 12 % (docs/benchmarks.md).
// serve and api keep the runtime's default; so does fleet-sim, which runs
// many hosts in one process.
func (a *app) oneProcessor() (restore func()) {
	if a.getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	before := runtime.GOMAXPROCS(1)
	return func() { runtime.GOMAXPROCS(before) }
}

func (a *app) migrateCommand() *cobra.Command {
	f := &serverFlags{}
	// The verb is checked before the config and the database: a typo is
	// told as one, not as a missing database URL.
	cmd := &cobra.Command{
		Use:       "migrate up|down|status",
		Short:     "Apply, roll back or list the PostgreSQL migrations embedded in this binary",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"up", "down", "status"},
		// An untrusted certificate names the setting to change, as at a
		// service's start: migrate up is the first command to reach a
		// PostgreSQL behind a CA of one's own (docs/deploy.md).
		RunE: func(cmd *cobra.Command, args []string) error { return postgresConnectError(a.migrate(cmd, f, args)) },
	}
	f.bind(cmd, "database_url")
	return cmd
}

// migrate runs migrate's verb, args[0].
func (a *app) migrate(cmd *cobra.Command, f *serverFlags, args []string) error {
	w, _, err := a.load(cmd, f, nil)
	if err != nil {
		return err
	}
	dsn := w.Current().DatabaseURL
	if dsn == "" {
		return fmt.Errorf("no database: set --database-url or ORDERLY_DATABASE_URL (orderly serve prints the URL of its own at start)")
	}
	// A lock that an open transaction holds (a pg_dump's) is waited
	// for, down as up: given up on every lockTimeout, tried again. The
	// migration lock another migrate holds is waited for too.
	waiting := func(err error) {
		if held := (*migrations.LockHeld)(nil); errors.As(err, &held) {
			fmt.Fprintln(a.stderr, err)
			return
		}
		fmt.Fprintf(a.stderr, "waiting for a table lock, trying again: %v\n", err)
	}
	open := func(dsn string) (*goose.Provider, *sql.DB, error) { return migrations.ProviderWaiting(dsn, waiting) }
	if args[0] == "status" {
		open = migrations.ReadProvider // reads only: no turn to wait for
	}
	p, db, err := open(dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	defer p.Close()
	ctx := cmd.Context()
	if args[0] == "up" || args[0] == "down" {
		// Without the newer migrations, up finds nothing to apply
		// (and would say up to date) and down none to roll back.
		have, err := p.GetDBVersion(ctx)
		if err != nil {
			return fmt.Errorf("read the schema version: %w", err)
		}
		if err := migrations.NotNewer(have); err != nil {
			return err
		}
	}
	switch args[0] {
	case "up":
		res, err := migrations.Apply(ctx, p, waiting)
		for _, r := range res {
			fmt.Fprintf(a.stdout, "applied %s (%s)\n", r.Source.Path, r.Duration)
		}
		if err != nil {
			return err
		}
		// A down that gave up may have left an index of a migration
		// still applied invalid or dropped: built again.
		rebuilt, err := migrations.Rebuild(ctx, db, waiting)
		for _, name := range rebuilt {
			fmt.Fprintf(a.stdout, "rebuilt index %s (a migrate down that gave up had left it invalid or dropped)\n", name)
		}
		if err == nil && len(res) == 0 && len(rebuilt) == 0 {
			fmt.Fprintln(a.stdout, "up to date")
		}
		return err
	case "down":
		r, err := migrations.Rollback(ctx, p, waiting)
		if r != nil {
			fmt.Fprintf(a.stdout, "rolled back %s\n", r.Source.Path)
		}
		if errors.Is(err, goose.ErrNoNextVersion) {
			// goose's words for it: "no next version found".
			return errors.New("nothing to roll back: the database has no orderly migration applied")
		}
		return err
	case "status":
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		// One column for the states, however long a file's name
		// (00018_cancel_requests_by_time.sql outgrew a fixed 30).
		width := 0
		for _, s := range st {
			width = max(width, len(s.Source.Path))
		}
		for _, s := range st {
			applied := "pending"
			if !s.AppliedAt.IsZero() {
				applied = "applied " + s.AppliedAt.Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(a.stdout, "%-*s  %s\n", width, s.Source.Path, applied)
		}
		// Migrations this binary does not know are not in the list:
		// say that a newer orderly migrated the database.
		if have, err := p.GetDBVersion(ctx); err == nil {
			if want, err := migrations.Latest(); err == nil && have > want {
				fmt.Fprintf(a.stdout, "the database is at version %d, newer than this binary's %d: a newer orderly migrated it\n", have, want)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown migrate command %q (want up, down or status)", args[0])
}

// serveMetrics serves the worker's /metrics on addr until the returned
// function is called.
func serveMetrics(addr string, b *backend, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("worker.metrics_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", b.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", "error", err)
		}
	}()
	logger.Info("worker metrics listening", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
