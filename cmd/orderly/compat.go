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
)

// mountCompat mounts the compat surfaces the config enables (api/compat).
// Enabling or moving one takes a restart; their other settings are read
// per request, so a reload applies to them at once.
func mountCompat(srv *api.Server, w *config.Watcher, sec *security) {
	cfg := w.Current().Compat
	d := compat.Deps{
		Orders: srv,
		Config: w.Current,
		ACL:    func() *netacl.ACL { return sec.acl.Load() },
		Auth:   func() compat.Authenticator { return sec.authn.Load() },
		Authorize: func(p auth.Principal, host, command string, args []string, runAs string, dryRun bool) (order.Decision, error) {
			return sec.policy.Load().Decide(policy.Request{Principal: p, Host: host, Command: command, Args: args,
				RunAs: runAs, Timeout: w.Current().Limits.DefaultTimeout, TimeoutDefaulted: true, DryRun: dryRun})
		},
		Drift: func() bool { d, _ := w.Drift(); return d },
		Reload: func(ctx context.Context) error {
			_, err := w.ReloadWith(ctx, config.ReloadOptions{})
			return err
		},
	}
	if cfg.HTTPExec.Enabled {
		srv.MountCompat(api.CompatSurface{Prefix: cfg.HTTPExec.Prefix, Fallback: true, Handler: &compat.HTTPExec{Deps: d,
			Wait: func() time.Duration { return w.Current().Limits.MaxTimeout + time.Minute }}})
	}
	if cfg.Vigrid.Enabled {
		srv.MountCompat(api.CompatSurface{Prefix: cfg.Vigrid.Prefix, Handler: &compat.Vigrid{Deps: d,
			PID: func(ctx context.Context, id uuid.UUID, attempt int) int {
				if p, err := sec.store.ProcessOf(ctx, id, attempt); err == nil && p != nil {
					return p.PID
				}
				return 0
			}}})
	}
	if cfg.Stage0.Enabled {
		// One handler for stage0's /api/... and its /dev-login at the root.
		h := &compat.Stage0{Deps: d, Runbooks: srv, Getenv: os.LookupEnv,
			// compat.stage0.shutdown: stop this process as SIGTERM does.
			Shutdown: func() { _ = syscall.Kill(os.Getpid(), syscall.SIGTERM) }}
		srv.MountCompat(api.CompatSurface{Prefix: cfg.Stage0.Prefix, Handler: h},
			api.CompatSurface{Prefix: "/dev-login", Handler: h})
	}
}
