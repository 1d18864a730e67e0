package executor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An order's own cgroup (cgroup v2) is what contains every process it
// starts, including those that leave its process group with setsid or a
// daemonizing double fork: a process cannot leave a cgroup without write
// access to a common ancestor's cgroup.procs, which only the worker (root,
// or the owner of the delegated subtree) has. cgroup.kill (Linux 5.14)
// SIGKILLs a whole cgroup subtree, race-free against concurrent forks, and
// cgroup.events says when it is empty ("populated 0"); an empty cgroup is
// removed with rmdir.
//
// The order's cgroup gets no controllers: the worker only needs the core
// files, so it may create children in its own (non-root) cgroup without
// breaking cgroup v2's rule that a cgroup with controllers enabled for its
// children has no processes of its own.

// cgroupGoneTimeout bounds how long ending a cgroup waits for it to be
// empty after cgroup.kill; a process in uninterruptible sleep can outlive
// it.
const cgroupGoneTimeout = 5 * time.Second

// cgroupNamePattern is what an order's cgroup may be called: one path
// element the caller chose ("order-<uuid>"), nothing that could climb out
// of the parent or shadow an interface file.
var cgroupNamePattern = regexp.MustCompile(`^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]*$`)

// orderCgroup is the cgroup v2 directory one order runs in.
type orderCgroup struct {
	path string
	// freeze ends the cgroup as a kernel without cgroup.kill makes it
	// (freezeKill), for the tests of that path.
	freeze bool
}

// createOrderCgroup makes <parent>/<name> and opens it for clone3's
// CLONE_INTO_CGROUP; the caller closes the returned fd once the process
// has started, and removes the cgroup if it did not. A cgroup of that name
// that is already there is an earlier attempt's of the same order (see
// Request.CgroupName): it is ended first, and earlier, then non-nil, lists
// the processes it still held.
func createOrderCgroup(parent, name string) (cg *orderCgroup, fd int, earlier []int, err error) {
	if !filepath.IsAbs(parent) {
		return nil, -1, nil, fmt.Errorf("cgroup parent %q is not an absolute path", parent)
	}
	if !cgroupNamePattern.MatchString(name) || strings.HasPrefix(name, "cgroup.") {
		return nil, -1, nil, fmt.Errorf("cgroup name %q is not a plain directory name", name)
	}
	path := filepath.Join(filepath.Clean(parent), name)
	cg = &orderCgroup{path: path}
	err = os.Mkdir(path, 0o755)
	if errors.Is(err, fs.ErrExist) {
		// Named after the order, in the worker's own parent: an earlier
		// attempt's (the order was requeued, and the cgroup was left
		// populated or not removed). Whatever it holds must not run on
		// next to this attempt; it is never reused, which would leave
		// them in this attempt's cgroup.
		var sfs unix.Statfs_t
		if err := unix.Statfs(path, &sfs); err != nil || sfs.Type != unix.CGROUP2_SUPER_MAGIC {
			return nil, -1, nil, fmt.Errorf("create cgroup: %s exists and is not a cgroup v2 directory", path)
		}
		earlier, _ = cg.procs()
		if earlier == nil {
			earlier = []int{}
		}
		if err := cg.end(); err != nil {
			return nil, -1, earlier, fmt.Errorf("end an earlier attempt's cgroup: %w", err)
		}
		err = os.Mkdir(path, 0o755)
	}
	if err != nil {
		return nil, -1, earlier, fmt.Errorf("create cgroup: %w", err)
	}
	fd, err = unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = cg.remove()
		return nil, -1, earlier, fmt.Errorf("open cgroup %s: %w", path, err)
	}
	return cg, fd, earlier, nil
}

// kill SIGKILLs every process of the cgroup and its descendants. A cgroup
// that no longer exists has nothing to kill.
func (c *orderCgroup) kill() error {
	if c.freeze {
		return c.freezeKill()
	}
	err := writeCgroupFile(filepath.Join(c.path, "cgroup.kill"), "1")
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat(filepath.Join(c.path, "cgroup.freeze")); statErr == nil {
			return c.freezeKill() // Linux 5.2 – 5.13: no cgroup.kill
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill cgroup %s: %w", c.path, err)
	}
	return nil
}

// freezeKill is kill on a kernel without cgroup.kill: it freezes the
// cgroup (and so its descendants), where no process can fork any more and
// a SIGKILL still kills, then SIGKILLs each process listed, through
// signalOthers' pidfds so that a pid reused meanwhile is never signalled.
// The freeze takes effect as each process reaches the kernel, so a
// process forked before then can be missed: end calls kill until the
// cgroup is empty, and each round freezes what was forked in the last.
func (c *orderCgroup) freezeKill() error {
	err := writeCgroupFile(filepath.Join(c.path, "cgroup.freeze"), "1")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", c.path, err)
	}
	return c.signalOthers(-1, unix.SIGKILL, false)
}

// writeCgroupFile writes value to an interface file of a cgroup, which
// must exist: no O_CREAT nor O_TRUNC, one open, one write, one close.
func writeCgroupFile(path, value string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// populated reports whether a live process is left in the cgroup or its
// descendants; zombies do not count. A removed cgroup is not populated.
// It is read on every order's end, into a buffer on the stack.
func (c *orderCgroup) populated() (bool, error) {
	path := c.path + "/cgroup.events"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read cgroup events: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	var buf [128]byte
	n, err := unix.Read(fd, buf[:])
	_ = unix.Close(fd)
	if err != nil {
		return false, fmt.Errorf("read cgroup events: %w", &fs.PathError{Op: "read", Path: path, Err: err})
	}
	events := buf[:max(n, 0)]
	for len(events) > 0 {
		var line []byte
		line, events, _ = bytes.Cut(events, []byte("\n"))
		if v, ok := bytes.CutPrefix(line, []byte("populated ")); ok {
			return string(v) != "0", nil
		}
	}
	return false, fmt.Errorf("read cgroup events: no populated line in %s", c.path)
}

// procs lists the processes of the cgroup and its descendants, for the
// record of what was killed.
func (c *orderCgroup) procs() ([]int, error) {
	var pids []int
	err := filepath.WalkDir(c.path, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		return pids, fmt.Errorf("list processes of cgroup %s: %w", c.path, err)
	}
	return pids, nil
}

// end kills every process of the cgroup, waits until it is empty and
// removes it (and any child cgroups a root order made). It returns nil only
// when the cgroup is verified empty and gone.
func (c *orderCgroup) end() error { return c.endWithin(cgroupGoneTimeout) }

// endWithin is end with wait for the cgroup to empty after cgroup.kill.
func (c *orderCgroup) endWithin(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	pause := 50 * time.Microsecond
	for first := true; ; first = false {
		// An order that left nothing behind (its leader is a zombie,
		// which does not count) needs no kill: one read, then rmdir.
		if !first || c.freeze {
			if err := c.kill(); err != nil {
				return err
			}
		}
		full, err := c.populated()
		if err != nil {
			return err
		}
		if !full {
			return c.remove()
		}
		if first {
			continue
		}
		if time.Now().After(deadline) {
			pids, _ := c.procs()
			return fmt.Errorf("cgroup %s still has processes %v after SIGKILL", c.path, pids)
		}
		// Not ctx-bound: a worker shutting down must still not leave
		// the order's processes behind.
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// remove deletes the cgroup and its descendants, deepest first; each must
// be empty. An already removed cgroup is not an error. An order's cgroup
// seldom has children (only an order run by root makes them), so one rmdir
// is tried first, and the tree walked only when that finds them (EBUSY).
func (c *orderCgroup) remove() error {
	if err := unix.Rmdir(c.path); err == nil || err == unix.ENOENT {
		return nil
	}
	var dirs []string
	err := filepath.WalkDir(c.path, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", c.path, err)
	}
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
	}
	return nil
}

// exists reports whether the cgroup directory is still there.
func (c *orderCgroup) exists() (bool, error) {
	_, err := os.Stat(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat cgroup %s: %w", c.path, err)
	}
	return true, nil
}

// signalOthers sends sig, and SIGCONT after it when cont is set, to every
// process of the cgroup and its descendants that is not in process group
// pgid (every one for -1). Each is signalled through a pidfd, opened before the cgroup is
// listed again: a pid listed both times belonged, at the second look, to a
// process of the cgroup, and the pidfd is that process's or one that has
// since died (the signal then fails with ESRCH), never a later process's
// that got the pid.
func (c *orderCgroup) signalOthers(pgid int, sig syscall.Signal, cont bool) error {
	pids, err := c.procs()
	if err != nil || len(pids) == 0 {
		return err
	}
	fds := make(map[int]int, len(pids))
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	for _, pid := range pids {
		if fd, err := unix.PidfdOpen(pid, 0); err == nil {
			fds[pid] = fd
		}
	}
	still, err := c.procs()
	if err != nil {
		return err
	}
	for _, pid := range still {
		fd, ok := fds[pid]
		if !ok {
			continue // new since the first look: forked after the leader's signal
		}
		if pgid != -1 {
			if st, err := readStat(pid); err != nil || st.pgrp == pgid {
				continue // gone, or signalled with its group
			}
		}
		if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && err != unix.ESRCH {
			return fmt.Errorf("signal process %d of cgroup %s: %w", pid, c.path, err)
		}
		if cont {
			_ = unix.PidfdSendSignal(fd, unix.SIGCONT, nil, 0)
		}
	}
	return nil
}
