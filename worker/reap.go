package worker

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/postgres"
	"github.com/orderly-run/orderly/worker/executor"
)

// reap ends what is left of an abandoned attempt's processes and proves it
// gone before the host runs anything else: no two orders of a host ever
// overlap, even when the previous worker was only frozen and its order's
// processes kept running. It retries until the processes are proven gone
// or ctx ends, and returns the evidence for the order's record.
func (w *Worker) reap(ctx context.Context, id uuid.UUID, p *postgres.Process) map[string]any {
	if p == nil {
		// The worker stopped between the claim and the record of the
		// process: the leader it may have forked died with it
		// (Pdeathsig). Where orders get their own cgroups, the cgroup's
		// name is known without a record: end whatever is in it.
		ev := map[string]any{"process_recorded": false}
		cg, ok := w.policy.(cgroupNamer)
		if !ok || cg.OrderCgroup(id) == "" {
			return ev
		}
		boot, err := executor.CurrentBootID()
		if err != nil {
			ev["reap_error"] = err.Error()
			return ev
		}
		r := executor.Reap(ctx, executor.Process{Cgroup: cg.OrderCgroup(id), BootID: boot}, w.logger.With("order_id", id))
		ev["cgroup"], ev["found"], ev["killed"], ev["verified"] = cg.OrderCgroup(id), r.Found, len(r.Killed), r.Verified
		if r.Err != nil {
			ev["reap_error"] = r.Err.Error()
		}
		return ev
	}
	ev := map[string]any{"process_recorded": true, "pid": p.PID, "pgid": p.PGID, "cgroup": p.Cgroup,
		"process_started_at": p.StartedAt, "last_heartbeat": p.LastSeen, "worker": p.Worker}
	proc := executor.Process{PID: p.PID, PGID: p.PGID, StartTime: p.StartTime, BootID: p.BootID,
		MachineID: p.MachineID, PidNS: p.PidNS, Cgroup: p.Cgroup}
	b := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	// Its lines say whose processes they killed, or could not prove gone.
	logger := w.logger.With("order_id", id)
	for {
		r := executor.Reap(ctx, proc, logger)
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

// cgroupNamer is implemented by a host policy that runs each order in its
// own cgroup (hostpolicy.Policy.OrderCgroup): "" when it does not.
type cgroupNamer interface {
	OrderCgroup(id uuid.UUID) string
}
