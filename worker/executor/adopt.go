package executor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The order's orphans. A process that starts a session of its own (setsid,
// a daemonizing double fork) leaves the order's group and session, and
// without an order cgroup nothing the executor could look at tied it to the
// order any more: when its parent died it was handed to init. A worker that
// is a child subreaper (AdoptOrphans) is handed them instead, every orphaned
// descendant of every order, wherever in the tree it was forked, and a child
// of the worker's keeps its pid until the worker reaps it: once the order's
// group and session are ended, each child of the worker that is not one of
// its leaders and was forked since the order's leader is what is left of
// the order, and can be killed by pid without a pid-reuse race. Its own
// children are handed to the worker in turn when it dies, so the end goes on
// until no such child is left.

// AdoptOrphans makes the worker's process a child subreaper
// (PR_SET_CHILD_SUBREAPER), so that every orphaned descendant of an order
// is re-parented to it rather than to init, and makes Run end and reap
// them at each order's end (Result.Adopted, VerifiedSubreaper).
// StopAdopting undoes it once the worker stopped.
//
// It is for a process whose only children are the orders of this one
// Executor, run one at a time (the worker's contract): every child the
// process has that is not a leader of this Executor's is taken for an
// order's. A process that starts other programs (serve's managed
// PostgreSQL, whose postmaster pg_ctl daemonizes and would be re-parented
// to it) or runs several orders at once (fleet-sim) must not call it.
func (e *Executor) AdoptOrphans() error {
	// The flag is the whole process's: one someone else set (an init
	// of a container, a supervisor) is theirs, and StopAdopting leaves it.
	var was int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&was)), 0, 0, 0); err != nil {
		return fmt.Errorf("read the child subreaper flag: %w", err)
	}
	if was == 0 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("become a child subreaper: %w", err)
		}
	}
	e.mu.Lock()
	e.setSubreaper = was == 0
	e.mu.Unlock()
	e.adopting.Store(true)
	return nil
}

// StopAdopting ends AdoptOrphans once the worker stopped and runs no
// order any more: it clears the child subreaper flag if AdoptOrphans set
// it, and reaps the orders' orphans that died since their order's end.
// A process that goes on after its worker (serve in a test binary, an
// embedding program) stayed a subreaper for good before: every later
// orphan of whatever it started (a postmaster pg_ctl daemonized) was
// handed to it, and nothing reaped it, a zombie holding its pid. Cleared
// first, so that nothing is handed over while the dead are reaped; an
// orphan that still lives stays the process's child (it outlived its
// order's SIGKILL already, and Run said so: Result.Escaped).
func (e *Executor) StopAdopting() error {
	if !e.adopting.Load() {
		return nil
	}
	e.mu.Lock()
	set := e.setSubreaper
	e.setSubreaper = false
	e.mu.Unlock()
	var err error
	if set {
		if err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
			err = fmt.Errorf("stop being a child subreaper: %w", err)
		}
	}
	e.reapStrays()
	e.adopting.Store(false)
	return err
}

// lockStarts is taken around a leader's start and its entry in e.leaders,
// so that endAdopted never sees a leader of this Executor's before it is
// known as one. It is a no-op for an Executor that does not adopt.
func (e *Executor) lockStarts() (unlock func()) {
	if !e.adopting.Load() {
		return func() {}
	}
	e.mu.Lock()
	return e.mu.Unlock
}

// leaderStarted and leaderReaped keep e.leaders, the leaders this Executor
// started and has not reaped: their Wait is os/exec's, so they are never
// taken for an order's orphans nor reaped by endAdopted.
func (e *Executor) leaderStarted(pid int) {
	if e.adopting.Load() {
		e.leaders[pid] = struct{}{} // under lockStarts
	}
}

func (e *Executor) leaderReaped(pid int) {
	if e.adopting.Load() {
		e.mu.Lock()
		delete(e.leaders, pid)
		e.mu.Unlock()
	}
}

// endAdopted ends and reaps what is left of the order whose leader is
// leader (still unreaped, started at clock tick start) among the worker's
// children: every child forked since the leader that is not a leader of
// this Executor's. It is called once the order's group and session (or
// cgroup) were ended; found counts the children that had left the order's
// session (escapees, which only the subreaper found), and gone reports
// whether none of them is left alive, within groupGoneTimeout. The pids
// looked at are those handed out since the leader's start (pidRange), as
// for the session: a process forked later than the leader got one of them.
func (e *Executor) endAdopted(ctx context.Context, leader int, start uint64, before *pidReading) (found int, gone bool) {
	if e.host.sessionAlone(leader) {
		return 0, true // nothing was forked since the leader
	}
	self := os.Getpid()
	escapees := map[int]bool{}
	deadline := time.Now().Add(groupGoneTimeout)
	pause := 50 * time.Microsecond
	for {
		since, pids := e.pidRange(leader, before)
		if since != nil {
			var err error
			if pids, err = procPids(func(p int) bool { return p != leader && since(p) }); err != nil {
				e.logger.LogAttrs(ctx, slog.LevelWarn, "list the worker's children", slog.Int("pid", leader), slog.String("error", err.Error()))
				return len(escapees), false
			}
		}
		var live []int
		e.mu.Lock()
		for _, p := range pids {
			if !isChild(p) {
				continue // forked elsewhere on the host: no stat to read
			}
			st, err := readStat(p)
			if err != nil || st.ppid != self || st.startTime < start {
				continue
			}
			if _, ok := e.leaders[p]; ok {
				continue
			}
			// p is the worker's child: its pid, and as a group leader
			// its group id, stay p's until the worker reaps it.
			if st.session != leader {
				escapees[p] = true
			}
			if !st.alive() && (reapChild(p) || !isChild(p)) {
				continue // reaped, or no child of ours any more
			}
			// Alive, or dead and a child still, not reapable: a thread
			// group whose main thread exited while others run on, whose
			// stat says Z and which waitid keeps until its last thread
			// ends. Its threads are no children (isChild), so it is
			// ended by its pid, pinned while it is unreaped, as a live
			// one: a SIGKILL to it ends every thread. Skipped as dead,
			// it ran on past the order's end, which said it gone.
			live = append(live, p)
			if err := unix.Kill(p, unix.SIGKILL); err != nil && err != unix.ESRCH {
				e.logger.LogAttrs(ctx, slog.LevelWarn, "kill an orphan of the order", slog.Int("pid", p), slog.String("error", err.Error()))
			}
			if st.pgrp == p {
				e.killGroup(ctx, p, unix.SIGKILL)
			}
		}
		e.mu.Unlock()
		if len(live) == 0 {
			return len(escapees), true
		}
		if time.Now().After(deadline) {
			e.logger.LogAttrs(ctx, slog.LevelWarn, "orphans of the order survived SIGKILL",
				slog.Int("pid", leader), slog.Any("pids", live))
			return len(escapees), false
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// isChild reports whether pid is a child of this process (of any of its
// threads), alive or dead and unreaped, from the kernel's own list of
// children: waitid neither waits nor reaps here, and answers ECHILD for a
// pid that is not one. endAdopted asks it before it reads a pid's stat
// for its parent: the pids handed out since the leader are mostly other
// processes' forks on a busy host, and with eight workers on one machine
// a stat read each, open, read and close, was ~12 of them an order
// (docs/benchmarks.md, "Thirty-eighth round: eight hosts' CPU per order,
// accounted"). An answer other than ECHILD says child: the stat read
// then decides, as before.
func isChild(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err != unix.ECHILD
		}
	}
}

// reapStrays reaps the worker's dead children that are not leaders of this
// Executor's: orphans of earlier orders that outlived their end (a process
// the worker may not signal, or one that was still dying) and died since.
// Without it each would stay a zombie of the worker for good. It stops at
// the first dead leader, whose reaping is os/exec's: Run calls it once its
// leader is reaped.
func (e *Executor) reapStrays() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		pid := int(siginfoPid(&info))
		if err != nil || pid == 0 {
			return
		}
		if _, ok := e.leaders[pid]; ok {
			return
		}
		reapChild(pid)
	}
}

// reapChild reaps the dead child pid, if it is one, and reports whether
// it did: not a child, not dead, or a dead thread group leader whose
// other threads still run, which waitid does not reap yet.
func reapChild(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG, nil)
		if err != unix.EINTR {
			return err == nil && siginfoPid(&info) == int32(pid)
		}
	}
}

// siginfoPid is the si_pid of a waitid's answer: the first field of the
// union after si_signo, si_errno and si_code, aligned as a pointer.
func siginfoPid(info *unix.Siginfo) int32 {
	const off = 3*4 + (unsafe.Sizeof(uintptr(0)) - 4)
	return *(*int32)(unsafe.Add(unsafe.Pointer(info), off))
}
