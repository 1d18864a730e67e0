package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/orderly-run/orderly/internal/procfs"
)

// extraHosts are the hosts beyond serve's own ("bench") that the host
// scaling runs: serve issues their NATS credentials (--nats-workers) and the
// bench starts one `orderly worker` process for each.
var extraHosts = []string{"h2", "h3", "h4", "h5", "h6", "h7", "h8"}

// startWorkers starts one `orderly worker` per host on serve's NATS and
// PostgreSQL, waits until each has run an order, and returns how to stop
// them and their process ids.
func startWorkers(ctx context.Context, srv *server, bin string, c *client, hosts []string) (func(), []int, error) {
	ch := &children{}
	stop := ch.stop
	for _, h := range hosts {
		args := []string{"worker", "--host", h, "--nats-url", srv.natsURL, "--database-url", srv.dsn}
		if nk := filepath.Join(srv.dir, "nats-creds", "worker-"+h+".nk"); fileExists(nk) {
			args = append(args, "--nats-nkey", nk)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "ORDERLY_LOG__LEVEL=warn")
		if err := ch.start(cmd, "worker-"+h, nil); err != nil {
			return stop, nil, err
		}
	}
	for _, h := range hosts {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := warmUp(wctx, c, h)
		cancel()
		if err != nil {
			return stop, nil, fmt.Errorf("worker %s: %w", h, err)
		}
	}
	return stop, ch.pids(), nil
}

// workersCPU adds the extra workers' CPU to serve's in a sample: with
// several hosts "serve" means every orderly process; the workers' share is
// kept apart too, so that the report can say which process spent it.
func workersCPU(base func() cpuSample, pids []int) func() cpuSample {
	return func() cpuSample {
		s := base()
		for _, pid := range pids {
			if f := procfs.Fields(pid); f != nil {
				s.serveSelf += ticks(f[11]) + ticks(f[12])
				s.workers += ticks(f[11]) + ticks(f[12])
				s.serveChildren += ticks(f[13]) + ticks(f[14])
			}
		}
		return s
	}
}
