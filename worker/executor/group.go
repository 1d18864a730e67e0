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
	dir, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var live []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue // exited and reaped meanwhile
		}
		state, group, ok := parseStat(stat)
		if ok && group == pgid && state != 'Z' && state != 'X' {
			live = append(live, pid)
		}
	}
	return live, nil
}

// parseStat extracts the state and process group from /proc/<pid>/stat:
// "pid (comm) state ppid pgrp …". comm may itself contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(stat []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 3 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err := strconv.Atoi(string(fields[2]))
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], pgrp, true
}
