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
	busy, total                  uint64 // machine ticks
}

func delta(a, b cpuSample) cpuDelta {
	return cpuDelta{server: b.serveSelf - a.serveSelf, commands: b.serveChildren - a.serveChildren,
		pg: b.pg - a.pg, client: b.bench - a.bench,
		busy: b.machineBusy - a.machineBusy, total: b.machineTotal - a.machineTotal}
}

func (d *cpuDelta) add(o cpuDelta) {
	d.server += o.server
	d.commands += o.commands
	d.pg += o.pg
	d.client += o.client
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

// split describes the CPU per order by process, with the machine's load.
func (d cpuDelta) split(n int, server string) string {
	per := func(x time.Duration) string { return fmt.Sprintf("%.2f", ms64(x)/float64(max(n, 1))) }
	busy, other := 0.0, 0.0
	if d.total > 0 {
		busy = 100 * float64(d.busy) / float64(d.total)
		other = max(0, busy-100*float64(d.sum()/clockTick)/float64(d.total))
	}
	s := fmt.Sprintf("%.2f ms: %s %s, the commands %s", d.perOrder(n), server, per(d.server), per(d.commands))
	if d.pg > 0 {
		s += ", PostgreSQL " + per(d.pg)
	}
	return s + fmt.Sprintf(", client %s; machine %.0f %% busy, other processes %.0f %%", per(d.client), busy, other)
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
