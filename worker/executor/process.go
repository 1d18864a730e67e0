package executor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// bootIDPath holds the kernel's random id of the current boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// Process identifies the processes of one order beyond the life of the
// worker that started them, so that another worker can find and kill what
// is left of them (Reap) without ever mistaking a later process that got
// the same pid for the order's.
//
// The worker records it (Request.OnStart) before the order's outcome can
// depend on it; every field is needed to reap safely.
type Process struct {
	// PID is the order's leader. The executor makes it the leader of a
	// new session and so of a new process group: PGID == PID, and every
	// process of the group also has session id PID.
	PID  int `json:"pid"`
	PGID int `json:"pgid"`
	// StartTime is the leader's start in clock ticks since boot
	// (/proc/<pid>/stat field 22). A pid reused by another process has
	// another start time.
	StartTime uint64 `json:"start_time"`
	// BootID is /proc/sys/kernel/random/boot_id at the start: start times
	// and pids only mean something within one boot.
	BootID string `json:"boot_id"`
	// MachineID is /etc/machine-id, when the machine has one: another
	// machine also has another boot id, which must not be mistaken for a
	// reboot of this one (a standby worker on the wrong machine).
	MachineID string `json:"machine_id,omitempty"`
	// PidNS is the inode of the worker's pid namespace: PID and PGID are
	// numbers in that namespace only. Zero means unknown.
	PidNS uint64 `json:"pid_ns,omitempty"`
	// Cgroup is the path of the order's own cgroup (under the unified
	// hierarchy's mount point); empty when the order runs without one.
	Cgroup string `json:"cgroup,omitempty"`
}

// CurrentBootID returns the id of the current boot, for a Process record
// made without a running process (a cgroup to reap by its path alone).
func CurrentBootID() (string, error) { return readBootID() }

// machine is where processes are: the parts of a Process that are the same
// for every process a worker starts.
type machine struct {
	bootID    string
	machineID string
	pidNS     uint64
}

// readMachine reads the current boot id, machine id and pid namespace. A
// missing machine id is no error (minimal containers have none).
func readMachine() (machine, error) {
	boot, err := readBootID()
	if err != nil {
		return machine{}, err
	}
	m := machine{bootID: boot}
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		m.machineID = string(bytes.TrimSpace(b))
	}
	if m.pidNS, err = readPidNS(); err != nil {
		return machine{}, err
	}
	return m, nil
}

// readPidNS returns the inode of this process's pid namespace: pids are
// numbers in it only. An error when /proc is another pid namespace's
// (unshare --pid --fork without --mount-proc, nsenter --pid without the
// mount namespace): its /proc/<pid> is another namespace's process of
// that number, so that a live owner read there was judged gone (another
// start time: TestGoneReadsNoOtherPidNamespacesProc), and an order's
// processes would be judged and signalled by what other processes show.
func readPidNS() (uint64, error) {
	// /proc/self names this process by its pid in the pid namespace of
	// /proc's mount.
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		return 0, fmt.Errorf("read pid namespace: /proc/self is %q (%v), not this process's pid %d: /proc is mounted for another pid namespace; mount this namespace's own (unshare --mount-proc)",
			self, err, os.Getpid())
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0, fmt.Errorf("read pid namespace: %w", err)
	}
	return st.Ino, nil
}

// inOwnTimeNS reports whether process pid is in this process's time
// namespace, whose boottime offset start times read from /proc carry:
// true on a kernel without time namespaces, false when pid's cannot be
// read (another user's process to a reader without the right to trace
// it, one that exited meanwhile): only then do start times compare.
func inOwnTimeNS(pid int) bool {
	same, known := sameTimeNS(pid)
	return same && known
}

// inOtherTimeNS reports whether process pid is known to be in another
// time namespace than this process's: false when either cannot be read.
func inOtherTimeNS(pid int) bool {
	same, known := sameTimeNS(pid)
	return !same && known
}

// sameTimeNS reports whether process pid is in this process's time
// namespace, and whether that is known (both links read, or a kernel
// without time namespaces).
func sameTimeNS(pid int) (same, known bool) {
	var own, its unix.Stat_t
	if err := unix.Stat("/proc/self/ns/time", &own); err != nil {
		return true, errors.Is(err, unix.ENOENT)
	}
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/time", &its); err != nil {
		return false, false
	}
	return own.Dev == its.Dev && own.Ino == its.Ino, true
}

// readBootID returns the id of the current boot.
func readBootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := string(bytes.TrimSpace(b))
	if id == "" {
		return "", fmt.Errorf("read boot id: %s is empty", bootIDPath)
	}
	return id, nil
}

// identify describes the just started leader pid. The leader is the
// executor's unreaped child, so its pid cannot have been reused yet and
// its /proc entry is its own.
func identify(pid int, m machine, cgroup string) (Process, error) {
	p := Process{PID: pid, PGID: pid, BootID: m.bootID, MachineID: m.machineID, PidNS: m.pidNS, Cgroup: cgroup}
	st, err := readStat(pid)
	if err != nil {
		return p, fmt.Errorf("identify order process %d: %w", pid, err)
	}
	if st.pgrp != pid || st.session != pid {
		return p, fmt.Errorf("identify order process %d: it leads group %d and session %d, not its own", pid, st.pgrp, st.session)
	}
	p.StartTime = st.startTime
	return p, nil
}
