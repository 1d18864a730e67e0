package main

import (
	"fmt"
	"sync"

	"github.com/spf13/cobra"
)

// fleetCommand runs many simulated hosts in one process, to measure orderly
// at fleet scale on one machine (docs/benchmarks.md, docs/scaling.md). Each
// host is a whole worker — its own durable consumer, lease, heartbeat and
// takeover — exactly as `orderly worker --host` runs it; the hosts share
// this process's NATS connection and PostgreSQL pool, where separate
// processes would have one each. For simulation only: every host's orders
// run on this machine, as this user.
func (a *app) fleetCommand() *cobra.Command {
	f := &serverFlags{}
	var (
		n      int
		prefix string
	)
	cmd := &cobra.Command{
		Use:    "fleet-sim",
		Short:  "Run the workers of many simulated hosts in one process (measurements only)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 {
				return fmt.Errorf("--hosts must be at least 1, got %d", n)
			}
			ctx := cmd.Context()
			w, logger, err := a.load(cmd, f, nil)
			if err != nil {
				return err
			}
			cfg := w.Current()
			b, err := openBackendAs(ctx, cfg, "orderly-fleet-sim", roleWorker, logger)
			if err != nil {
				return err
			}
			defer b.close()
			runners := make([]*workerRunner, 0, n)
			// Stopped together: one by one, each would wait its own
			// shutdown in turn.
			defer func() {
				var wg sync.WaitGroup
				for _, r := range runners {
					wg.Go(func() { _ = r.stop() })
				}
				wg.Wait()
			}()
			for i := range n {
				c := cfg
				c.Host = fmt.Sprintf("%s%d", prefix, i+1)
				r, err := startWorker(ctx, c, b, logger, nil)
				if err != nil {
					return fmt.Errorf("simulated host %s: %w", c.Host, err)
				}
				runners = append(runners, r)
			}
			if addr := cfg.Worker.MetricsListen; addr != "" {
				stopMetrics, err := serveMetrics(addr, b, logger)
				if err != nil {
					return err
				}
				defer stopMetrics()
			}
			logger.Info("fleet simulation running", "hosts", n, "first", prefix+"1", "last", fmt.Sprintf("%s%d", prefix, n))
			return a.waitForSignals(ctx, w, logger, nil, nil)
		},
	}
	cmd.Flags().IntVar(&n, "hosts", 100, "number of simulated hosts")
	cmd.Flags().StringVar(&prefix, "host-prefix", "sim-", "host ids are this prefix and 1..N")
	f.bind(cmd, "database_url", "nats.url", "nats.nkey")
	return cmd
}
