package main

import (
	"context"

	"github.com/orderly-run/orderly/internal/metrics"
)

// fleetSources wires the fleet gauges (internal/metrics/fleet.go) to the
// API's PostgreSQL store and NATS queue: queue age and the reconciler's
// backlog from PostgreSQL, hosts known from PostgreSQL, online from
// their KV heartbeats and stood by from their standby reports, and both
// dependencies' reachability.
func fleetSources(b *backend) metrics.FleetSources {
	return metrics.FleetSources{
		QueueAges:   b.store.QueueAges,
		Unpublished: b.store.UnpublishedBacklog,
		Hosts: func(ctx context.Context) (map[string]metrics.HostState, error) {
			known, err := b.store.Hosts(ctx)
			if err != nil {
				return nil, err
			}
			online, standbys, err := b.queue.Workers(ctx)
			if err != nil {
				return nil, err
			}
			out := make(map[string]metrics.HostState, len(known)+len(online))
			for _, h := range known {
				out[h.Host] = metrics.HostState{}
			}
			for h, info := range online {
				out[h] = metrics.HostState{Online: true, PostgresUnreachable: info.PostgresUnreachable != nil}
			}
			for h := range standbys {
				st := out[h]
				st.Standby = true
				out[h] = st
			}
			return out, nil
		},
		Dependencies: map[string]func(context.Context) error{
			"postgres": b.pool.Ping,
			"nats": func(ctx context.Context) error {
				if err := b.queue.Ping(ctx); err != nil {
					return err
				}
				return b.queue.Storing() // up, but acknowledging no publish
			},
		},
	}
}
