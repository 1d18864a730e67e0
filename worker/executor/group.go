package executor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
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
		// what matters here.
		live, scanErr := liveGroupMembers(pgid)
		if scanErr == nil && len(live) == 0 {
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

// liveGroupMembers lists the processes of group pgid that are not zombies,
// from /proc. It is only used on the slow path, when kill(-pgid, 0) says
// the group still exists.
func liveGroupMembers(pgid int) ([]int, error) {
	members, err := groupMembers(pgid)
	if err != nil {
		return nil, err
	}
	var live []int
	for _, m := range members {
		if m.alive() {
			live = append(live, m.pid)
		}
	}
	return live, nil
}

// member is one process of a process group as /proc showed it.
type member struct {
	pid int
	procStat
}

// groupMembers lists every process of group pgid, zombies included, from
// /proc.
func groupMembers(pgid int) ([]member, error) {
	dir, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var members []member
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // exited and reaped meanwhile
		}
		if st.pgrp == pgid {
			members = append(members, member{pid: pid, procStat: st})
		}
	}
	return members, nil
}

// procStat is what the executor needs from /proc/<pid>/stat.
type procStat struct {
	state   byte
	pgrp    int
	session int
	// startTime is field 22, the start in clock ticks since boot: with the
	// boot id, what tells a process from a later one that got its pid.
	startTime uint64
}

// alive reports whether the process has not exited: zombies, waiting for
// init (or a subreaper) to reap them, are dead for every purpose here.
func (s procStat) alive() bool { return s.state != 'Z' && s.state != 'X' }

// readStat reads and parses /proc/<pid>/stat. A process that does not exist
// (any more) is an error wrapping fs.ErrNotExist.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, ok := parseStat(b)
	if !ok {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: unexpected format %q", pid, b)
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
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, false
	}
	pgrp, err1 := strconv.Atoi(string(fields[2]))
	session, err2 := strconv.Atoi(string(fields[3]))
	start, err3 := strconv.ParseUint(string(fields[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{state: fields[0][0], pgrp: pgrp, session: session, startTime: start}, true
}
