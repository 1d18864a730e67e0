package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/worker/systemd"
)

// liveActions is the API's compiled actions, swapped whole on a reload.
type liveActions struct {
	set atomic.Pointer[action.Set]
	w   *config.Watcher
}

// watchActions compiles the actions of w's config and registers their
// rebuild with every reload: actions that do not compile refuse the
// reload, and the running ones stay.
func watchActions(w *config.Watcher) (*liveActions, error) {
	l := &liveActions{w: w}
	set, err := action.New(w.Current().Actions)
	if err != nil {
		return nil, fmt.Errorf("actions: %w", err)
	}
	l.set.Store(set)
	w.AddPreparer("api actions", func(_ context.Context, c config.Config) (func(), error) {
		set, err := action.New(c.Actions)
		if err != nil {
			return nil, fmt.Errorf("actions: %w", err)
		}
		return func() { l.set.Store(set) }, nil
	})
	return l, nil
}

// authorizer is intake's view of the actions.
func (l *liveActions) authorizer() intake.ActionAuthorizer { return l.set.Load() }

// deps wires /v1/actions. Unit choices are listed over this machine's
// D-Bus (actions.bus), so only for the host whose worker shares the
// API's machine (serve, or an API next to its worker); other hosts
// answer 503.
func (l *liveActions) deps() *api.ActionDeps {
	return &api.ActionDeps{
		Set: l.set.Load,
		Choices: func(ctx context.Context, host, glob string) ([]api.UnitChoice, error) {
			c := l.w.Current()
			if host != c.Host {
				return nil, order.Errorf(order.CodeUnavailable, "unit choices of host %s are listed only by an API on that host", host)
			}
			units, err := systemd.ListUnits(ctx, c.Actions.Bus, glob)
			if err != nil {
				return nil, &order.Error{Code: order.CodeUnavailable, Message: "systemd could not list the units", Err: err}
			}
			out := make([]api.UnitChoice, len(units))
			for i, u := range units {
				out[i] = api.UnitChoice{Unit: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState}
			}
			return out, nil
		},
	}
}
