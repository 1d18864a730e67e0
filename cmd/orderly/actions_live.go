package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/api"
	"github.com/orderly-run/orderly/internal/action"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/queue"
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
	w.AddCheck("api actions", checkActions)
	return l, nil
}

// checkActions tells the drift check whether a config's actions compile,
// so that /v1/status says in advance that a reload would be refused.
func checkActions(c config.Config) error {
	if _, err := action.New(c.Actions); err != nil {
		return fmt.Errorf("actions: %w", err)
	}
	return nil
}

// authorizer is intake's view of the actions.
func (l *liveActions) authorizer() intake.ActionAuthorizer { return l.set.Load() }

// deps wires /v1/actions. Unit choices are asked of the host's worker
// over the bus (only it sees its host's systemd), waiting up to 5 s.
func (l *liveActions) deps(q *queue.Queue) *api.ActionDeps {
	return &api.ActionDeps{
		Set: l.set.Load,
		Choices: func(ctx context.Context, host, glob string) ([]api.UnitChoice, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			units, err := q.RequestChoices(ctx, host, glob)
			if errors.Is(err, queue.ErrNoChoices) {
				return nil, order.Errorf(order.CodeUnavailable, "no worker of host %s answered for its units", host)
			}
			if err != nil {
				return nil, &order.Error{Code: order.CodeUnavailable, Message: "the worker of host " + host + " could not list its units: " + err.Error(), Err: err}
			}
			out := make([]api.UnitChoice, len(units))
			for i, u := range units {
				out[i] = api.UnitChoice{Unit: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState}
			}
			return out, nil
		},
	}
}

// serveChoices answers the unit choices requests of host from the
// worker's live host policy (its own actions, its own D-Bus) until ctx
// ends.
func serveChoices(ctx context.Context, q *queue.Queue, host string, policy *livePolicy) error {
	return q.ServeChoices(ctx, host, func(ctx context.Context, glob string) ([]queue.Unit, error) {
		units, err := policy.p.Load().UnitChoices(ctx, glob)
		if err != nil {
			return nil, err
		}
		out := make([]queue.Unit, len(units))
		for i, u := range units {
			out[i] = queue.Unit{Name: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState}
		}
		return out, nil
	})
}
