package main

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/api/compat"
	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/netacl"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/policy"
	"github.com/orderly-run/orderly/internal/postgres"
)

// httpexecGrace is how long past limits.max_timeout an httpexec request
// waits for its order before it cancels it (a variable for the tests).
var httpexecGrace = time.Minute

// mountCompat mounts the compat surfaces the config enables (api/compat).
// Enabling or moving one takes a restart: a surface keeps the prefix it
// was mounted at, whatever a reload says. A reload that turns a surface
// off applies at once. Their other settings are read per request, so a
// reload applies to them at once too.
func mountCompat(srv *api.Server, w *config.Watcher, sec *security) {
	cfg := w.Current().Compat
	d := compat.Deps{
		Orders: srv,
		Config: func() config.Config {
			c := w.Current()
			c.Compat.HTTPExec.Prefix, c.Compat.Vigrid.Prefix, c.Compat.Stage0.Prefix = cfg.HTTPExec.Prefix, cfg.Vigrid.Prefix, cfg.Stage0.Prefix
			return c
		},
		ACL:  func() *netacl.ACL { return sec.acl.Load() },
		Auth: func() compat.Authenticator { return sec.authn.Load() },
		Authorize: func(p auth.Principal, host, command string, args []string, runAs string, dryRun bool) (order.Decision, error) {
			return sec.policy.Load().Decide(policy.Request{Principal: p, Host: host, Command: command, Args: args,
				RunAs: runAs, Timeout: w.Current().Limits.DefaultTimeout, TimeoutDefaulted: true, DryRun: dryRun})
		},
		// Vigrid hashed its config file on every request, so an edit is a
		// 503 at once and a restore clears it at once; a check costs ~45µs
		// for a 10 KB file (read and SHA-256), not worth a stat cache that
		// an edit within one mtime tick would fool.
		Drift: func() bool { d, _ := w.Check(); return d },
		Reload: func(ctx context.Context, by string) error {
			_, err := w.ReloadWith(ctx, config.ReloadOptions{By: by})
			return err
		},
	}
	if cfg.HTTPExec.Enabled {
		srv.MountCompat(api.CompatSurface{Prefix: cfg.HTTPExec.Prefix, Fallback: true, Handler: &compat.HTTPExec{Deps: d,
			Wait: func() time.Duration { return w.Current().Limits.MaxTimeout + httpexecGrace }},
			Enabled: func() bool { return w.Current().Compat.HTTPExec.Enabled }})
	}
	if cfg.Vigrid.Enabled {
		srv.MountCompat(api.CompatSurface{Prefix: cfg.Vigrid.Prefix, Handler: &compat.Vigrid{Deps: d,
			PID: func(ctx context.Context, id uuid.UUID, attempt int) int {
				return processPID(ctx, sec.store, id, attempt)
			}}, Enabled: func() bool { return w.Current().Compat.Vigrid.Enabled }})
	}
	if cfg.Stage0.Enabled {
		// One handler for stage0's /api/... and its /dev-login at the root.
		h := &compat.Stage0{Deps: d, Runbooks: srv, Getenv: os.LookupEnv,
			// compat.stage0.shutdown: stop this process as SIGTERM does.
			Shutdown: func() { _ = syscall.Kill(os.Getpid(), syscall.SIGTERM) }}
		on := func() bool { return w.Current().Compat.Stage0.Enabled }
		// stage0's Flask-Limiter sent X-RateLimit-* headers (its README).
		srv.MountCompat(api.CompatSurface{Prefix: cfg.Stage0.Prefix, Handler: h, Enabled: on, RateHeaders: true},
			api.CompatSurface{Prefix: "/dev-login", Handler: h, Enabled: on, RateHeaders: true})
	}
}

// processRecordWait bounds how long kill's answer waits for the process
// record of an order that is running but whose worker has not yet
// recorded what it started: the claim makes an order running a moment
// before the fork, and the record follows the fork.
const processRecordWait = 2 * time.Second

// processPID is the process id recorded for an order's attempt, waiting up
// to processRecordWait for the record to land; 0 when there is none by
// then (an action run over D-Bus has no process).
func processPID(ctx context.Context, store *postgres.Store, id uuid.UUID, attempt int) int {
	ctx, cancel := context.WithTimeout(ctx, processRecordWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if p, err := store.ProcessOf(ctx, id, attempt); err == nil && p != nil && p.PID > 0 {
			return p.PID
		}
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
}
