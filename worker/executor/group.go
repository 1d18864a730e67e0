package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitExitedNoReap blocks until the process pid has exited, leaving it
// unreaped: as a zombie it keeps its pid, and so its process group id, from
// being reused while the rest of the group is killed.
func waitExitedNoReap(pid int) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// killGroup sends sig to every process of the group. An empty group (ESRCH)
// is the normal end, not an error.
func (e *Executor) killGroup(ctx context.Context, pgid int, sig syscall.Signal) {
	if err := unix.Kill(-pgid, sig); err != nil && err != unix.ESRCH {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "signal order process group",
			slog.Int("pgid", pgid), slog.String("signal", signalName(sig)), slog.String("error", err.Error()))
	}
}

// confirmGroupGone reports whether the group has no live member left. It is
// called after the leader was reaped, when the group id can only still be
// in use by members of this group; it polls briefly, repeating the SIGKILL,
// while they finish dying.
func (e *Executor) confirmGroupGone(ctx context.Context, pgid int) bool {
	deadline := time.Now().Add(groupGoneTimeout)
	pause := 50 * time.Microsecond
	for {
		err := unix.Kill(-pgid, 0)
		if err == unix.ESRCH {
			return true
		}
		// The group still has members, but they may be zombies that only
		// init (or a subreaper) can reap, and some inits never do: dead is
		// what matters here. When the worker is that init (PID 1 of a
		// container), it reaps them itself (reapOrphans).
		// A member whose stat cannot be read is not listed: the
		// group's SIGKILL reaches it whatever /proc says, and only one
		// that outlived it (uninterruptible) would be missed here.
		members, _, scanErr := groupMembers(pgid)
		var live []int
		for _, m := range members {
			if m.alive() {
				live = append(live, m.pid)
			}
		}
		if scanErr == nil && len(live) == 0 {
			// Nothing is signalled from here on, so the group id may
			// go free.
			reapOrphans(members)
			return true
		}
		if time.Now().After(deadline) {
			attrs := []slog.Attr{slog.Int("pgid", pgid), slog.Any("pids", live)}
			if scanErr != nil {
				attrs = append(attrs, slog.String("error", scanErr.Error()))
			}
			e.logger.LogAttrs(ctx, slog.LevelWarn, "order process group survived SIGKILL", attrs...)
			return false
		}
		e.killGroup(ctx, pgid, unix.SIGKILL)
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// reapOrphans reaps the dead processes of an order that are the worker's
// own children. A process whose parent dies is handed to the nearest
// subreaper, or to PID 1 of its pid namespace, and a worker that is PID 1
// (a container's entrypoint) is that: nothing else would reap them, and
// each zombie would keep a pid of the container's for good. They are the
// order's (members of its group or session) and were forked by the order,
// never by os/exec, so no Wait of the worker's is waiting for them. The
// leader, which Run reaps itself, is never among them.
func reapOrphans(members []member) {
	self := os.Getpid()
	for _, m := range members {
		if m.alive() || m.ppid != self || m.pid == m.session {
			continue
		}
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, m.pid, &info, unix.WEXITED|unix.WNOHANG, nil)
			if err != unix.EINTR {
				break
			}
		}
	}
}

// member is one process of a process group as /proc showed it.
type member struct {
	pid int
	procStat
}

// groupMembers lists every process of group pgid, zombies included, from
// /proc, and the pids whose stat could not be read (procsWhere).
func groupMembers(pgid int) (members []member, unread []int, err error) {
	return procsWhere(func(st procStat) bool { return st.pgrp == pgid }, readStat)
}

// procsWhere lists every process, zombies included, whose /proc/<pid>/stat
// (as stat reads it: readStat, or a test's) satisfies keep; unread lists
// the pids whose stat could not be read for another reason than that they
// are gone (refused), which may satisfy it: the caller asks the kernel
// about them otherwise.
func procsWhere(keep func(procStat) bool, stat func(int) (procStat, error)) (members []member, unread []int, err error) {
	pids, err := procPids(func(int) bool { return true })
	if err != nil {
		return nil, nil, err
	}
	for _, pid := range pids {
		st, err := stat(pid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // exited and reaped meanwhile
		}
		if err != nil {
			unread = append(unread, pid)
			continue
		}
		if keep(st) {
			members = append(members, member{pid: pid, procStat: st})
		}
	}
	return members, unread, nil
}

// procPids lists the pids in /proc that want says to look at.
func procPids(want func(pid int) bool) ([]int, error) {
	dir, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	names, err := dir.Readdirnames(-1)
	_ = dir.Close()
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var pids []int
	for _, name := range names {
		if pid, err := strconv.Atoi(name); err == nil && want(pid) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procStat is what the executor needs from /proc/<pid>/stat.
type procStat struct {
	state   byte
	ppid    int
	pgrp    int
	session int
	// startTime is field 22, the start in clock ticks since boot: with the
	// boot id, what tells a process from a later one that got its pid.
	startTime uint64
}

// alive reports whether the process has not exited: zombies, waiting for
// init (or a subreaper) to reap them, are dead for every purpose here.
func (s procStat) alive() bool { return s.state != 'Z' && s.state != 'X' }

// threadsLive reports whether a thread of process pid other than its
// first one is alive. A process whose main thread exited while its other
// threads run on (a program's main returning with pthread_exit, a raw
// exit(2)) reads Z in its stat, and lives: the kernel keeps its dead
// leader until the last thread ends, and a signal to its pid reaches
// them all. Its threads' ids are not in /proc's listing, which names
// thread groups only. Read for a process whose stat says Z: rare.
//
// start is that stat's start time: the pid read again after its threads
// must still be that process's, or the threads read were those of a
// later process that got its pid once the zombie was reaped, and the
// dead member was taken for alive (its number then reported killed).
// The same process at both ends is the same in between: a pid is not
// handed out again while its process exists.
func threadsLive(pid int, start uint64) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	f, err := os.Open(dir)
	if err != nil {
		return false // gone
	}
	names, err := f.Readdirnames(-1)
	_ = f.Close()
	if err != nil {
		return false
	}
	for _, name := range names {
		if name == strconv.Itoa(pid) {
			continue
		}
		var buf [1024]byte
		if b, err := readProcFile(dir+"/"+name+"/stat", buf[:]); err == nil {
			if st, ok := parseStat(b); ok && st.alive() {
				leader, err := readStat(pid)
				return err == nil && leader.startTime == start
			}
		}
	}
	return false
}

// readStat reads and parses /proc/<pid>/stat. A process that does not exist
// (any more) is an error wrapping fs.ErrNotExist.
//
// It is on every order's path (identify, and sessionGroups when the
// order's session may have forked), so it reads with plain system calls
// into a buffer on the stack: open, read, close. os.ReadFile adds an fstat,
// four fcntl and an epoll_ctl (a try at the poller, refused for a /proc
// file) and allocates a File and the content.
func readStat(pid int) (procStat, error) {
	var buf [1024]byte
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	b, err := readProcFile(path, buf[:])
	if errors.Is(err, unix.ESRCH) {
		// Opened before the process was reaped, read after: as gone as
		// one whose file was not there to open. (Reap took it for a
		// failure, and on its next try found nothing it had killed.)
		return procStat{}, fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	if err != nil {
		return procStat{}, err
	}
	st, ok := parseStat(b)
	if !ok {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: unexpected format %q", pid, string(b))
	}
	return st, nil
}

// parseStat parses /proc/<pid>/stat: "pid (comm) state ppid pgrp session
// … starttime …". comm may itself contain spaces and parentheses, so
// fields are counted from the last ')'.
func parseStat(stat []byte) (procStat, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procStat{}, false
	}
	// After ')': state(3) ppid(4) pgrp(5) session(6) … starttime(22).
	// The first 20 fields, split on white space into an array on the
	// stack (bytes.Fields would allocate a slice for all of them).
	var fields [20][]byte
	n := 0
	for rest := stat[i+1:]; n < len(fields); {
		start := 0
		for start < len(rest) && asciiSpace(rest[start]) {
			start++
		}
		if start == len(rest) {
			break
		}
		end := start
		for end < len(rest) && !asciiSpace(rest[end]) {
			end++
		}
		fields[n] = rest[start:end]
		n++
		rest = rest[end:]
	}
	if n < len(fields) || len(fields[0]) != 1 {
		return procStat{}, false
	}
	ppid, err0 := strconv.Atoi(string(fields[1]))
	pgrp, err1 := strconv.Atoi(string(fields[2]))
	session, err2 := strconv.Atoi(string(fields[3]))
	start, err3 := strconv.ParseUint(string(fields[19]), 10, 64)
	if err0 != nil || err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{state: fields[0][0], ppid: ppid, pgrp: pgrp, session: session, startTime: start}, true
}

func asciiSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

// The order's session. The leader is a session leader, and nothing outside
// the order can join its session: a process that moves to a process group
// of its own (setpgid; a shell with job control puts every background job
// in one) leaves the order's group but stays in its session, under the
// leader's pid as session id. Unlike a group, a session cannot be signalled
// as a whole, so its other groups are found in /proc. To keep that cheap,
// only the pids handed out since the leader are looked at: every process
// of the session but the leader was forked after it, and pids are handed
// out in increasing order, so those are the pids after the leader's, up
// to the last one handed out (wrapping past pid_max once) — unless the
// pid space went round more than once meanwhile, which the count of forks
// since boot rules out or makes the scan look at every pid (pidMoved).
// Most orders fork nothing: when the last pid handed out is still the
// leader's, which the zombie leader keeps from being handed out again, no
// process was created since, and nothing else is read (sessionAlone). The
// reading before the start is the Executor's last one (pidsSeen), taken
// before that start: an order pays for no read of /proc/stat before it
// starts, which on a host with many CPUs and interrupts is a large file,
// and one after only when it forked.

// pidReading is the pid allocator's state at one moment: the fork count
// since boot, then (read after it) the number of tasks on the host.
type pidReading struct {
	forks uint64
	tasks int
}

// readPids takes a reading, keeps it for later orders and returns it; nil
// when it could not.
func (e *Executor) readPids() *pidReading {
	forks, err := e.host.forkCount()
	if err != nil {
		return nil
	}
	tasks, err := e.host.taskCount()
	if err != nil {
		return nil
	}
	r := &pidReading{forks: forks, tasks: tasks}
	e.pidsSeen(r)
	return r
}

// pidMoved bounds how far the pid allocator's cursor can have moved since
// the reading before, taken before the leader's start, given the fork
// count now; known false: the count went backwards, which it cannot.
//
// On its first trip round the pid space from where it was at before, the
// cursor passes each number once: it hands it out (a fork, counted) or
// skips it because it is in use (a pid, a group id or a session id, each
// held by a task). A number it skips was in use at before, or was handed
// out since; the second is impossible within one trip, since the cursor
// had passed it. And the numbers in use grow only by forks: setsid and
// setpgid(0, 0) take the caller's own pid as the id. So the trip is no
// longer than the forks since before plus three numbers for each task at
// before. The tasks of before, not now: tasks that were there at the start
// and ended since (other workloads of the host, or the order's user's
// other processes that the order killed) were skipped all the same, and a
// count at the end would miss them. The tasks the order forks are forks.
func pidMoved(before pidReading, forks uint64) (moved uint64, known bool) {
	return forks - min(forks, before.forks) + 3*uint64(before.tasks), forks >= before.forks
}

// pidsSeen keeps the reading with the highest fork count, the latest, for
// the next orders.
func (e *Executor) pidsSeen(r *pidReading) {
	for {
		old := e.pids.Load()
		if old != nil && old.forks >= r.forks || e.pids.CompareAndSwap(old, r) {
			return
		}
	}
}

// procFileOpened, set by a test only, is called with each path that
// readProcFile opened, before it reads it: where a process can end
// between the two.
var procFileOpened func(path string)

// readProcFile reads the whole of a small /proc file into buf with plain
// system calls and returns what it read; a file longer than buf is read
// with os.ReadFile instead. Errors are *os.PathError, as os.ReadFile's.
func readProcFile(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if procFileOpened != nil {
		procFileOpened(path)
	}
	defer func() { _ = unix.Close(fd) }()
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			return buf[:n], nil
		}
		n += m
	}
	return os.ReadFile(path)
}

// pidRange says which pids may belong to processes forked since the leader
// sid: since reports whether pid p may, or few lists them all. before is
// the reading taken before the leader was started; nil means none could be.
func (e *Executor) pidRange(sid int, before *pidReading) (since func(p int) bool, few []int) {
	since, few, _ = e.pidRangeLast(sid, before)
	return since, few
}

// pidRangeLast is pidRange that also returns the last pid handed out
// when it looked, which every pid it names was handed out by; -1 when it
// could not read it.
func (e *Executor) pidRangeLast(sid int, before *pidReading) (since func(p int) bool, few []int, last int) {
	// The reading now is for later orders: this one needs only the
	// fork count.
	now := e.readPids()
	last, err2 := e.host.lastPidNow()
	if err2 != nil {
		last = -1
	}
	pidMax, err3 := e.host.pidMaxNow()
	if before == nil || now == nil || err2 != nil || err3 != nil {
		return func(int) bool { return true }, nil, last
	}
	moved, known := pidMoved(*before, now.forks)
	since, few = pidWindow(sid, last, pidMax, moved, known)
	return since, few, last
}

// pidWindow is pidRange for a leader sid, the last pid handed out, pid_max
// and how far the pid allocator can have moved since the leader's start
// (pidMoved). known false: the fork count went backwards, which it cannot.
func pidWindow(sid, last, pidMax int, moved uint64, known bool) (since func(p int) bool, few []int) {
	// 300 pids (RESERVED_PIDS) are never handed out again after a wrap;
	// moving less than the rest cannot have gone round past the leader.
	if !known || pidMax <= 300 || moved >= uint64(pidMax-300) {
		return func(int) bool { return true }, nil
	}
	if last < sid { // wrapped once
		return func(p int) bool { return p > sid || p <= last }, nil
	}
	if last-sid <= 64 {
		// Few enough to look up by number rather than list /proc.
		for p := sid + 1; p <= last; p++ {
			few = append(few, p)
		}
		return nil, few
	}
	return func(p int) bool { return p > sid && p <= last }, nil
}

// sessionPids lists the pids that may be of processes of session sid
// forked since its leader sid (pidRange), the leader's not among them,
// and the last pid handed out before it listed them (-1: unknown).
func (e *Executor) sessionPids(sid int, before *pidReading) (pids []int, last int, err error) {
	since, pids, last := e.pidRangeLast(sid, before)
	if since == nil {
		return pids, last, nil
	}
	pids, err = procPids(func(p int) bool { return p != sid && since(p) })
	return pids, last, err
}

// sessionEnded reports whether session sid, whose leader has exited, has
// no live process left. Then none can ever come back: only a live
// process of a session forks into it, and nothing joins one from
// outside. A session that forked nothing since its leader costs one
// read (sessionAlone). Else its pids are looked at (sessionPids), and
// then, round after round, the pids handed out since the last pid the
// previous round knew of, until a round in which none was: a member that
// forked and exited between the listing and its own look left a child
// with a pid handed out after that, which a later round looks at. On
// a busy host the rounds see the host's other forks, a few getsid each.
// Any doubt (too many rounds or pids, a wrap of the pid space, a failed
// read) answers false: the caller then treats the order as still
// running, which costs it a record, never a process.
func (e *Executor) sessionEnded(sid int, before *pidReading) bool {
	if e.host.sessionAlone(sid) {
		return true
	}
	pids, last, err := e.sessionPids(sid, before)
	if err != nil || last < 0 {
		return false
	}
	for range sessionEndedRounds {
		if sessionLive(sid, pids, realLook) {
			return false
		}
		now, err := e.host.lastPidNow()
		if err != nil || now < last || now-last > sessionEndedPids {
			return false
		}
		if now == last {
			return true
		}
		pids = pids[:0]
		for p := last + 1; p <= now; p++ {
			pids = append(pids, p)
		}
		last = now
	}
	return false
}

// sessionEndedRounds and sessionEndedPids bound sessionEnded's look at
// the pids handed out while it looks: past them it answers false.
const (
	sessionEndedRounds = 16
	sessionEndedPids   = 256
)

// procLook is how the look at an order's session reads a pid: its
// session id (getsid), its stat (readStat) and whether threads of it
// other than the first live on (threadsLive; nil: none). The executor's
// is realLook; a test's refuses or hides what the kernel would not.
type procLook struct {
	getsid  func(pid int) (int, error)
	stat    func(pid int) (procStat, error)
	threads func(pid int, start uint64) bool
	// otherTimeNS reports whether process pid is known to be in another
	// time namespace than this process's (inOtherTimeNS); nil: none is.
	otherTimeNS func(pid int) bool
}

// realLook reads the kernel's answers.
var realLook = procLook{getsid: unix.Getsid, stat: readStat, threads: threadsLive, otherTimeNS: inOtherTimeNS}

// comparable reports whether the start time of process pid as read here
// compares with a record's: /proc shows it offset by the reader's time
// namespace's boottime, and the order's processes are in the time
// namespace of the worker that started them and recorded their start.
// One whose namespace cannot be read (another user's, to a worker not
// root) compares, as it did before time namespaces were looked at: a
// reap held up by every such process that got a reused pid and leads a
// session of its own would hold the host until that one ended.
func (l procLook) comparable(pid int) bool { return l.otherTimeNS == nil || !l.otherTimeNS(pid) }

// alive reports whether process pid, whose stat is st, lives: not a
// zombie, or one whose main thread alone has exited (threadsLive).
// Taken for dead, such a process of the order's session was never
// signalled and ran on past the order's end, and the successor's reap
// passed it by.
func (l procLook) alive(pid int, st procStat) bool {
	return st.alive() || l.threads != nil && l.threads(pid, st.startTime)
}

// sessionRead is what a look at one pid found of it, for an order's
// session.
type sessionRead int

const (
	notInSession sessionRead = iota // gone, or of another session
	inSession                       // of the session, its stat read
	// unreadMember is of the session (getsid said so), but its stat
	// could not be read (refused; hidden, by a /proc mounted with
	// hidepid over a member that changed its credentials): its group
	// and whether it lives are unknown, but it may be signalled by its
	// pid, which the zombie leader keeps the session's own.
	unreadMember
	// unreadPid: neither getsid nor stat answered (a security module
	// refusing both): it may be of the session, and nothing says which
	// of its groups to kill.
	unreadPid
)

// readMember looks at pid for session sid. sessionLive and
// sessionGroups ask it both, so that a pid the look counts live is one
// the kill signals or reports unproven: never one it takes for outside
// the session. One getsid rules out a pid of another session (most of
// them, on a busy host) without opening its /proc entry.
func readMember(sid, pid int, look procLook) (procStat, sessionRead) {
	s, err := look.getsid(pid)
	if err == unix.ESRCH || err == nil && s != sid {
		return procStat{}, notInSession
	}
	st, serr := look.stat(pid)
	switch {
	case serr == nil && st.session == sid:
		return st, inSession
	case serr == nil:
		// Left the session since getsid (setsid: a deliberate escape,
		// which the session does not hold), or reaped and its pid
		// taken by a process of another session.
		return procStat{}, notInSession
	case errors.Is(serr, fs.ErrNotExist) && err != nil:
		return procStat{}, notInSession // reaped; nothing else to ask
	case errors.Is(serr, fs.ErrNotExist):
		// Reaped since getsid, or hidden from this worker: getsid
		// again tells.
		if s, err := look.getsid(pid); err == unix.ESRCH || err == nil && s != sid {
			return procStat{}, notInSession
		}
		return procStat{}, unreadMember
	case err == nil:
		return procStat{}, unreadMember
	}
	return procStat{}, unreadPid
}

// sessionLive reports whether one of pids is a live process of session
// sid, as look reads them (realLook; a test's own). A pid that cannot be
// read for another reason than that it is gone counts as live:
// sessionEnded's doubt, which costs a record, never a process.
func sessionLive(sid int, pids []int, look procLook) bool {
	for _, pid := range pids {
		if pid == sid {
			continue
		}
		switch st, r := readMember(sid, pid, look); r {
		case inSession:
			if look.alive(pid, st) {
				return true
			}
		case unreadMember, unreadPid:
			return true
		}
	}
	return false
}

// sessionGroups lists the process groups of session sid other than group
// sid that have a live member, and those members; unread the members it
// could not read the stat of, to be signalled by pid (readMember's
// unreadMember); live also has those and the pids that may be of the
// session (unreadPid), so that a kill is proven only once none is left;
// dead lists the members of those groups that are zombies.
func (e *Executor) sessionGroups(sid int, before *pidReading, look procLook) (groups, live, unread []int, dead []member, err error) {
	pids, _, err := e.sessionPids(sid, before)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	for _, pid := range pids {
		st, r := readMember(sid, pid, look)
		switch {
		case r == unreadMember:
			unread = append(unread, pid)
			live = append(live, pid)
		case r == unreadPid:
			live = append(live, pid)
		case r != inSession || st.pgrp == sid:
			// Not there (any more), or not of those groups.
		case !look.alive(pid, st):
			dead = append(dead, member{pid: pid, procStat: st})
		default:
			live = append(live, pid)
			if !slices.Contains(groups, st.pgrp) {
				groups = append(groups, st.pgrp)
			}
		}
	}
	return groups, live, unread, dead, nil
}

// killSession SIGKILLs the process groups of session sid other than group
// sid, until none has a live member, and reports whether it got there
// within groupGoneTimeout. It must be called while the leader is still
// unreaped: the zombie leader keeps the number sid from being handed out
// again, so every process with session id sid is the order's, and so is
// every group that has one as a member (a group lies within one session).
// A group id seen on such a member could only name another group after the
// group emptied and its id went round the whole pid space, between the
// look and the kill. A member whose stat it cannot read is killed by its
// pid, and one it cannot tell of the session or not (readMember's
// unreadPid) leaves the kill unproven: false, at groupGoneTimeout.
func (e *Executor) killSession(ctx context.Context, sid int, before *pidReading, look procLook) bool {
	if e.host.sessionAlone(sid) {
		return true
	}
	deadline := time.Now().Add(groupGoneTimeout)
	pause := 50 * time.Microsecond
	for {
		groups, live, unread, dead, err := e.sessionGroups(sid, before, look)
		if err != nil {
			e.logger.LogAttrs(ctx, slog.LevelWarn, "list the order's session", slog.Int("sid", sid), slog.String("error", err.Error()))
			return false
		}
		if len(live) == 0 {
			reapOrphans(dead)
			return true
		}
		e.signalSession(ctx, groups, unread, unix.SIGKILL)
		if time.Now().After(deadline) {
			// pids: what lives or could not be read (a pid getsid
			// could not tell is there, never signalled); unread: those
			// of the session whose stat could not be read.
			e.logger.LogAttrs(ctx, slog.LevelWarn, "processes of the order's session survived SIGKILL",
				slog.Int("sid", sid), slog.Any("pids", live), slog.Any("unread", unread))
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// signalSession sends sig to each of groups and each of pids, what
// sessionGroups listed of an order's session.
func (e *Executor) signalSession(ctx context.Context, groups, pids []int, sig syscall.Signal) {
	for _, g := range groups {
		if g > 1 { // kill(-1) would be every process
			e.killGroup(ctx, g, sig)
		}
	}
	for _, p := range pids {
		if err := unix.Kill(p, sig); err != nil && err != unix.ESRCH {
			e.logger.LogAttrs(ctx, slog.LevelWarn, "signal a process of the order's session",
				slog.Int("pid", p), slog.String("signal", signalName(sig)), slog.String("error", err.Error()))
		}
	}
}

// signalRest sends sig, and SIGCONT after it when cont is set, to every
// process of the running order o outside the leader's group, which the
// caller signalled itself: in an order cgroup every other process of the
// cgroup, without one the session's other groups. It is the graceful step
// of a timeout or a cancel, so it gives up quietly (a warning) on what it
// cannot look up: the order's end kills them all in any case. It runs only
// on a timeout, a cancel or a stop, never on an order's normal path.
func (e *Executor) signalRest(ctx context.Context, o orderProcs, sig syscall.Signal, cont bool) {
	if o.cg != nil {
		if err := o.cg.signalOthers(o.pgid, sig, cont); err != nil {
			e.logger.LogAttrs(ctx, slog.LevelWarn, "signal the order's cgroup", slog.Int("pgid", o.pgid),
				slog.String("signal", signalName(sig)), slog.String("error", err.Error()))
		}
		return
	}
	// The leader is alive (or its zombie unreaped): sid is pinned, and
	// what has it as session id is the order's. What it forks after this
	// look was forked after the signal and is left to the order's end.
	if e.host.sessionAlone(o.pgid) {
		return
	}
	groups, _, unread, _, err := e.sessionGroups(o.pgid, o.before, realLook)
	if err != nil {
		e.logger.LogAttrs(ctx, slog.LevelWarn, "list the order's session", slog.Int("sid", o.pgid), slog.String("error", err.Error()))
		return
	}
	e.signalSession(ctx, groups, unread, sig)
	if cont {
		e.signalSession(ctx, groups, unread, unix.SIGCONT)
	}
}
