package main

import (
	"fmt"
	"time"

	"github.com/orderly-run/orderly/internal/procfs"
)

// cpuDelta is the CPU a phase used, split by process: the server (serve or
// the peer), the commands it ran (its reaped children), PostgreSQL, and the
// bench's own client; and how busy the whole machine was.
type cpuDelta struct {
	server, commands, pg, client time.Duration
	pgBy                         [pgKinds]time.Duration // pg by kind of process
	workers, idle                time.Duration          // as in cpuSample
	busy, total                  uint64                 // machine ticks
}

func delta(a, b cpuSample) cpuDelta {
	return cpuDelta{server: b.serveSelf - a.serveSelf, commands: b.serveChildren - a.serveChildren,
		pg: b.pg.total() - a.pg.total(), pgBy: pgSplit(a.pg, b.pg), client: b.bench - a.bench, workers: b.workers - a.workers, idle: b.idle - a.idle,
		busy: b.machineBusy - a.machineBusy, total: b.machineTotal - a.machineTotal}
}

func (d *cpuDelta) add(o cpuDelta) {
	d.server += o.server
	d.commands += o.commands
	d.pg += o.pg
	for k := range d.pgBy {
		d.pgBy[k] += o.pgBy[k]
	}
	d.client += o.client
	d.workers += o.workers
	d.idle += o.idle
	d.busy += o.busy
	d.total += o.total
}

func (d cpuDelta) sum() time.Duration { return d.server + d.commands + d.pg + d.client }

// perOrder is the phase's CPU per order in milliseconds, all processes.
func (d cpuDelta) perOrder(n int) float64 {
	if n == 0 {
		return 0
	}
	return ms64(d.sum()) / float64(n)
}

// split describes the CPU per order by process, with the machine's load:
// of the server's, the extra workers' share; beside a peer's, what
// orderly's idle processes spent meanwhile (a share of the machine, which
// other processes then leave out).
func (d cpuDelta) split(n int, server string) string {
	per := func(x time.Duration) string { return fmt.Sprintf("%.2f", ms64(x)/float64(max(n, 1))) }
	share := func(x time.Duration) float64 { return 100 * float64(x/clockTick) / float64(d.total) }
	busy, other := 0.0, 0.0
	if d.total > 0 {
		busy = 100 * float64(d.busy) / float64(d.total)
		other = max(0, busy-share(d.sum()+d.idle))
	}
	s := fmt.Sprintf("%.2f ms: %s %s", d.perOrder(n), server, per(d.server))
	if d.workers > 0 {
		s += " (the extra workers " + per(d.workers) + ")"
	}
	s += ", the commands " + per(d.commands)
	if d.pg > 0 {
		s += ", PostgreSQL " + per(d.pg) + " (" + describePG(d.pgBy, n) + ")"
	}
	s += fmt.Sprintf(", client %s; machine %.0f %% busy", per(d.client), busy)
	if d.idle > 0 && d.total > 0 {
		s += fmt.Sprintf(", orderly idle meanwhile %.0f %%", share(d.idle))
	}
	return s + fmt.Sprintf(", other processes %.0f %%", other)
}

// pidCPU samples one process (and its reaped children) like server.cpu.
func pidCPU(pid int) cpuSample {
	s := machineAndBench()
	if f := procfs.Fields(pid); f != nil {
		s.serveSelf = ticks(f[11]) + ticks(f[12])
		s.serveChildren = ticks(f[13]) + ticks(f[14])
	}
	return s
}
