package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// How the end of an order's processes was verified (Result.Verified,
// ReapResult.Verified).
const (
	// VerifiedCgroup: the order's cgroup was killed, seen empty and
	// removed, or was already removed; escapees from the process group
	// are covered.
	VerifiedCgroup = "cgroup"
	// VerifiedGroup: no live process of the order's process group is
	// left, or the group provably no longer exists.
	VerifiedGroup = "group"
	// VerifiedSubreaper: as VerifiedGroup, and the worker, a child
	// subreaper (AdoptOrphans), had no child left of those forked since
	// the order's leader: every process descended from the order, one
	// that left its session included, was seen dead.
	VerifiedSubreaper = "subreaper"
	// VerifiedReboot: the host rebooted since the order started, which
	// ended all of its processes.
	VerifiedReboot = "reboot"
)

// reapTimeout bounds how long Reap waits for SIGKILLed processes to die.
const reapTimeout = 5 * time.Second

// ReapResult is what Reap found and did, for the order's record.
type ReapResult struct {
	// Found is set when live processes of the order were still running.
	Found bool
	// Killed lists the live processes of the order that were SIGKILLed.
	Killed []int
	// Verified says how the order's processes were proven gone:
	// VerifiedReboot, VerifiedCgroup or VerifiedGroup; empty when they
	// could not be (Err says why).
	Verified string
	// Detail says in a sentence what Reap concluded, for a person.
	Detail string
	// Err is set when the processes could not be proven gone.
	Err error
}

// Reap ends whatever is left of the order's processes described by p, and
// verifies that nothing of it is left. It is for a worker taking over a
// host from a worker that died or froze while running the order; the
// executor itself ends an order's processes when the order ends.
//
// It never signals a process that is not the order's: a pid is only ever
// trusted together with the start time and boot it was recorded with, and
// a process group only while its id provably still denotes the order's
// group (see reapGroup).
func Reap(ctx context.Context, p Process, logger *slog.Logger) ReapResult {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	res := reap(p)
	attrs := []slog.Attr{
		slog.Int("pgid", p.PGID), slog.String("cgroup", p.Cgroup),
		slog.Bool("found", res.Found), slog.Any("killed", res.Killed),
		slog.String("verified", res.Verified), slog.String("detail", res.Detail),
	}
	if res.Err != nil {
		logger.LogAttrs(ctx, slog.LevelWarn, "could not prove a previous order's processes gone",
			append(attrs, slog.String("error", res.Err.Error()))...)
	} else if res.Found {
		logger.LogAttrs(ctx, slog.LevelInfo, "killed a previous order's leftover processes", attrs...)
	}
	return res
}

func reap(p Process) ReapResult {
	here, err := readMachine()
	if err != nil {
		return ReapResult{Err: err}
	}
	if p.BootID == "" {
		return ReapResult{Err: errors.New("the process record has no boot id")}
	}
	// Another machine has another boot id too: only its machine id tells
	// that from a reboot of this one.
	if p.MachineID != "" && here.machineID != "" && p.MachineID != here.machineID {
		return ReapResult{Err: fmt.Errorf("the order ran on machine %s, not this one (%s): only a worker there can end its processes", p.MachineID, here.machineID)}
	}
	if p.BootID != here.bootID {
		return ReapResult{Verified: VerifiedReboot,
			Detail: fmt.Sprintf("the host rebooted since the order started (boot %s, now %s)", p.BootID, here.bootID)}
	}
	// Pids are numbers in one pid namespace; /proc here shows ours.
	if p.PidNS != 0 && p.PidNS != here.pidNS {
		return ReapResult{Err: fmt.Errorf("the order ran in pid namespace %d, not this worker's (%d): only a worker there can end its processes", p.PidNS, here.pidNS)}
	}
	if p.Cgroup != "" {
		if res, ok := reapCgroup(p.Cgroup, cgroupGoneTimeout); ok {
			return res
		}
	}
	return reapGroup(p, realLook)
}

// SweepCgroup ends the order cgroup at path, as Reap ends a recorded
// one, but gives it only wait to empty after cgroup.kill: it is for a
// sweep that comes back, which a cgroup that will not empty (a process in
// uninterruptible sleep) must not hold up for long. The caller has seen
// the directory, of its own cgroup parent, named after an order.
func SweepCgroup(path string, wait time.Duration) ReapResult {
	res, ok := reapCgroup(path, wait)
	if !ok {
		return ReapResult{Verified: VerifiedCgroup, Detail: "the order's cgroup and its parent are gone"}
	}
	return res
}

// reapCgroup ends the order's cgroup, waiting at most wait for it to empty.
// ok is false when neither the cgroup nor its parent exists, so nothing
// can be concluded from the cgroup (the hierarchy is mounted elsewhere
// now) and the process group must be checked instead.
func reapCgroup(path string, wait time.Duration) (res ReapResult, ok bool) {
	cg := &orderCgroup{path: filepath.Clean(path)}
	exists, err := cg.exists()
	if err != nil {
		return ReapResult{Err: err}, true
	}
	if !exists {
		if _, err := os.Stat(filepath.Dir(cg.path)); err != nil {
			return ReapResult{}, false
		}
		// The executor only removes an order's cgroup once it is empty,
		// and the kernel refuses to remove a populated one.
		return ReapResult{Verified: VerifiedCgroup, Detail: "the order's cgroup was already removed"}, true
	}
	full, err := cg.populated()
	if err != nil {
		return ReapResult{Err: err}, true
	}
	if full {
		res.Found = true
		res.Killed, _ = cg.procs()
	}
	// The directory is the order's own (named after it, created by the
	// executor for this order only), so everything in it is the order's.
	if err := cg.endWithin(wait); err != nil {
		res.Err = err
		return res, true
	}
	res.Verified = VerifiedCgroup
	res.Detail = "the order's cgroup was killed, seen empty and removed"
	return res, true
}

// reapGroup ends what is left of the order's process group.
//
// Why the group id can be trusted: Linux keeps a pid number allocated
// while any process uses it as its pid, process group id or session id.
// So while the order's group has any member, zombies included, no new
// process can get the number p.PGID, and a group with that id is the
// order's. Once the group is empty it is gone for good: a process can only
// join an existing group of its own session. The id can then be reused,
// and reapGroup must tell a new group with that id from the order's:
//
//   - The leader's /proc entry exists: its start time tells. Equal, it is
//     the order's leader (alive, or a zombie), which pins the number, so
//     the group is the order's. Different, the pid was freed and reused,
//     so the order's group was empty at some point and is gone.
//   - The leader is gone but processes with that group id live: they are
//     the order's only if each has session id p.PGID (the executor makes
//     the leader a session leader, and nothing can join a session) and
//     started no earlier than the leader. Anything else means the number
//     was reused: the order's group is gone, and nothing is signalled.
//
// What remains is a new process that got the same pid after the pid space
// wrapped around, made itself a session leader and died, leaving members
// started after the order's leader, all between the old worker's death and
// the takeover. A cgroup (Process.Cgroup) has no such window.
func reapGroup(p Process, look procLook) ReapResult {
	if p.PGID < 2 || p.PID != p.PGID {
		// kill(-0) is the caller's own group and kill(-1) every process.
		return ReapResult{Err: fmt.Errorf("process record has group %d and leader %d: refusing to signal it", p.PGID, p.PID)}
	}
	if p.PGID == os.Getpid() || p.PGID == unix.Getpgrp() {
		return ReapResult{Err: fmt.Errorf("process record names group %d, the reaping worker's own", p.PGID)}
	}
	var res ReapResult
	deadline := time.Now().Add(reapTimeout)
	pause := 50 * time.Microsecond
	for {
		verdict, live, groups, pids, err := inspectGroup(p, look)
		if err != nil {
			res.Err = err
			return res
		}
		if verdict != "" {
			res.Verified, res.Detail = VerifiedGroup, verdict
			return res
		}
		for _, pid := range live {
			if !slices.Contains(res.Killed, pid) {
				res.Killed = append(res.Killed, pid)
			}
		}
		res.Found = true
		if time.Now().After(deadline) {
			res.Err = fmt.Errorf("processes %v of group %d survived SIGKILL", live, p.PGID)
			return res
		}
		// The dangerous line. inspectGroup has just shown that group
		// p.PGID is the order's: its leader with the recorded start time
		// still holds the number, or its live members are all of the
		// leader's session and younger than it. Between that check and
		// this kill the number cannot change hands: a group with members
		// keeps its id allocated, and an emptied one would have to be
		// reused by a new process (after the whole pid space wrapped
		// around) that also became a session leader with members, within
		// microseconds. On the next turn the check is made again.
		// The same holds for the session's other groups: each has a
		// member of session p.PGID that inspectGroup found to be the
		// order's, and a group lies within one session.
		for _, g := range groups {
			if err := unix.Kill(-g, unix.SIGKILL); err != nil && err != unix.ESRCH {
				res.Err = fmt.Errorf("kill process group %d: %w", g, err)
				return res
			}
		}
		// And the members whose stat could not be read, which
		// inspectGroup found in the order's session, by pid: each
		// keeps its pid allocated until reaped, as a group its id.
		for _, pid := range pids {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
				res.Err = fmt.Errorf("kill process %d of the order's session: %w", pid, err)
				return res
			}
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// inspectGroup looks at group p.PGID and at the other groups of session
// p.PGID, which a process of the order that moved to a group of its own
// (setpgid) is in. A non-empty verdict means the order's group is gone and
// says why; otherwise live lists the live members of those groups, which
// are the order's (see reapGroup), groups lists the groups to kill,
// p.PGID first, and pids the members to kill by pid: those whose stat
// could not be read (refused, not gone) but which getsid puts in session
// p.PGID, once the rest shows the session to be the order's (its leader,
// or members that are). One of those that nothing shows to be the
// order's, or one getsid cannot tell, is an error: the reap is not
// proven, and nothing is signalled by a guess.
func inspectGroup(p Process, look procLook) (verdict string, live, groups, pids []int, err error) {
	leader, err := look.stat(p.PGID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", nil, nil, nil, err
	case leader.startTime != p.StartTime && leader.session == p.PGID && !look.comparable(p.PGID):
		// The start read here is offset by this worker's time namespace
		// and the record's by the recording worker's: a successor
		// started in another time namespace than its predecessor read
		// the order's live leader as a later process, and left it
		// running beside the next order. A session leader there, as the
		// order's leader stays for life, is not proven another.
		return "", nil, nil, nil, fmt.Errorf("pid %d leads its session, as the order's leader did, in another time namespace than this worker's: its start (tick %d as read here) does not compare with the record's (tick %d, as its worker read it)",
			p.PGID, leader.startTime, p.StartTime)
	case leader.startTime != p.StartTime:
		return fmt.Sprintf("pid %d now belongs to a process started at tick %d, not the order's leader (tick %d): the order's group is gone",
			p.PGID, leader.startTime, p.StartTime), nil, nil, nil, nil
	}
	proven := err == nil // the leader itself, unreaped, pins the number
	// A session id, like a group id, keeps its number allocated while a
	// process has it, and nothing can join a session from outside: the
	// same reasoning holds for the session's members as for the group's.
	members, unread, err := procsWhere(func(st procStat) bool { return st.pgrp == p.PGID || st.session == p.PGID }, look.stat)
	if err != nil {
		return "", nil, nil, nil, fmt.Errorf("list group %d: %w", p.PGID, err)
	}
	groups = []int{p.PGID}
	for _, m := range members {
		if m.session == p.PGID && m.startTime < p.StartTime && !look.comparable(m.pid) {
			// As the leader's, above.
			return "", nil, nil, nil, fmt.Errorf("process %d of the order's session %d is in another time namespace than this worker's: its start (tick %d as read here) does not compare with the leader's record (tick %d)",
				m.pid, p.PGID, m.startTime, p.StartTime)
		}
		if m.session != p.PGID || m.startTime < p.StartTime {
			return fmt.Sprintf("group %d now belongs to other processes (pid %d of session %d started at tick %d; the order's leader started at tick %d): the order's group is gone",
				p.PGID, m.pid, m.session, m.startTime, p.StartTime), nil, nil, nil, nil
		}
		proven = true
		if look.alive(m.pid, m.procStat) {
			live = append(live, m.pid)
			if m.pgrp > 1 && !slices.Contains(groups, m.pgrp) {
				groups = append(groups, m.pgrp)
			}
		}
	}
	// A group lies within one session, so getsid tells a member of
	// group p.PGID too.
	for _, pid := range unread {
		s, err := look.getsid(pid)
		switch {
		case err == unix.ESRCH || err == nil && s != p.PGID:
			continue
		case err != nil:
			return "", nil, nil, nil, fmt.Errorf("process %d could not be read (%w): whether it is of the order's session %d is unknown", pid, err, p.PGID)
		case !proven:
			return "", nil, nil, nil, fmt.Errorf("process %d of session %d could not be read, and nothing else shows the session to be the order's", pid, p.PGID)
		}
		live = append(live, pid)
		pids = append(pids, pid)
	}
	if len(live) == 0 {
		return "no live process of the order's group or session is left", nil, nil, nil, nil
	}
	return "", live, groups, pids, nil
}
