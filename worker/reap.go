package worker

import (
	"context"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/worker/executor"
)

// reap ends what is left of an abandoned attempt's processes and proves it
// gone before the host runs anything else: no two orders of a host ever
// overlap, even when the previous worker was only frozen and its order's
// processes kept running. It retries until the processes are proven gone
// or ctx ends, and returns the evidence for the order's record.
func (w *Worker) reap(ctx context.Context, p *postgres.Process) map[string]any {
	if p == nil {
		// The worker stopped between the claim and the start of the
		// process, or before it could record it: a process it may have
		// forked was killed with it (Pdeathsig); nothing is recorded.
		return map[string]any{"process_recorded": false}
	}
	ev := map[string]any{"process_recorded": true, "pid": p.PID, "pgid": p.PGID, "cgroup": p.Cgroup,
		"process_started_at": p.StartedAt, "last_heartbeat": p.LastSeen, "worker": p.Worker}
	proc := executor.Process{PID: p.PID, PGID: p.PGID, StartTime: p.StartTime, BootID: p.BootID,
		MachineID: p.MachineID, PidNS: p.PidNS, Cgroup: p.Cgroup}
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for {
		r := executor.Reap(ctx, proc, w.logger)
		if r.Err == nil && r.Verified != "" {
			ev["found"], ev["killed"], ev["verified"], ev["reap"] = r.Found, len(r.Killed), r.Verified, r.Detail
			return ev
		}
		w.logger.Error("the previous order's processes are not proven gone; the host waits", "pgid", p.PGID,
			"cgroup", p.Cgroup, "error", r.Err)
		if b.wait(ctx) != nil {
			ev["verified"], ev["reap_error"] = "", r.Err.Error()
			return ev
		}
	}
}
