package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderly-run/orderly/internal/order"
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
		// (Pdeathsig); or the leader had exited within RecordWait and
		// its record was to go with the result (the worker ends the rest
		// of the order right after the leader's exit, before the
		// result); or PostgreSQL crashed before it flushed the record
		// (RecordProcess). Where orders get
		// their own cgroups, the cgroup's name is known without a
		// record: end whatever is in it.
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

// runDirRemover is implemented by a host policy whose script orders run
// in a directory of their own (hostpolicy.Policy.RemoveRunDirs).
type runDirRemover interface {
	RemoveRunDirs(id uuid.UUID) ([]string, error)
}

// removeRunDirs removes what a script order's abandoned attempt left in
// its run directory (the script, its input files), once reap proved its
// processes gone, and adds to the reap's evidence what it removed. A
// directory it cannot remove is logged: the host does not wait for it.
func (w *Worker) removeRunDirs(id uuid.UUID, ev map[string]any) {
	rd, ok := w.policy.(runDirRemover)
	if !ok {
		return
	}
	removed, err := rd.RemoveRunDirs(id)
	if len(removed) > 0 {
		ev["run_dirs_removed"] = removed
	}
	if err != nil {
		w.logger.Warn("remove the run directory an interrupted script left", "order_id", id, "error", err)
		ev["run_dir_error"] = err.Error()
	}
}

// cgroupNamer is implemented by a host policy that runs each order in its
// own cgroup (hostpolicy.Policy.OrderCgroup): "" when it does not. Every
// order's cgroup is a child of one parent.
type cgroupNamer interface {
	OrderCgroup(id uuid.UUID) string
}

// sweepCgroupWait is how long the sweep gives an order's cgroup to empty
// after cgroup.kill: killed processes are gone in milliseconds, and one
// that is not (uninterruptible sleep) is tried again at the next sweep
// rather than holding the host's queue at each.
const sweepCgroupWait = 200 * time.Millisecond

// sweepCgroups ends the order cgroups left in the worker's cgroup parent
// by orders of this host that are not running: an attempt marked ended
// without a process record (the worker that ran it stopped between the
// start and the record, and the one that marked it stopped before its
// reap) is kept nowhere in PostgreSQL, and its cgroup, named after the
// order alone, is all there is to find its processes by; a cgroup that
// would not empty at the order's end is tried again. It runs where
// reapAbandoned does, when nothing runs here; a running order's cgroup is
// left to its abandon. An order of another host (a parent shared by the
// workers of several hosts) or one no longer in the database is left
// alone: nothing proves it is this host's. A cgroup that will not empty
// is logged and tried again at the next sweep: the host is not held up
// for it, as it is not at the order's own end.
func (w *Worker) sweepCgroups(ctx context.Context) error {
	cg, ok := w.policy.(cgroupNamer)
	if !ok {
		return nil
	}
	some := cg.OrderCgroup(uuid.Nil)
	if some == "" {
		return nil
	}
	parent := filepath.Dir(some)
	entries, err := os.ReadDir(parent)
	if err != nil {
		w.logger.Warn("list the orders' cgroups", "cgroup", parent, "error", err)
		return nil
	}
	for _, ent := range entries {
		name, found := strings.CutPrefix(ent.Name(), "order-")
		if !found || !ent.IsDir() {
			continue
		}
		id, err := uuid.Parse(name)
		if err != nil || cg.OrderCgroup(id) != filepath.Join(parent, ent.Name()) {
			continue
		}
		o, err := w.store.GetOrder(ctx, id)
		if errors.Is(err, order.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if o.Host != w.opts.Host || o.Status == order.StatusRunning {
			continue
		}
		r := executor.SweepCgroup(cg.OrderCgroup(id), sweepCgroupWait)
		if r.Err != nil {
			w.logger.Warn("an order's cgroup is left with processes; tried again at the next sweep", "order_id", id,
				"cgroup", cg.OrderCgroup(id), "status", o.Status, "killed", r.Killed, "error", r.Err)
			continue
		}
		w.logger.Warn("ended the cgroup an order left behind", "order_id", id, "cgroup", cg.OrderCgroup(id),
			"status", o.Status, "found", r.Found, "killed", r.Killed, "verified", r.Verified)
	}
	return nil
}
