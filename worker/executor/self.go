package executor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Self identifies the calling process: a worker records it as the host's
// owner, so that a successor can tell from PostgreSQL which process it
// replaces and whether that very process still lives. Its PidNS is the
// namespace its PID is a number in (0 when /proc does not say, with
// readPidNS's error).
func Self() (Process, error) {
	pid := os.Getpid()
	boot, err := readBootID()
	if err != nil {
		return Process{PID: pid}, err
	}
	st, err := readStat(pid)
	if err != nil {
		return Process{PID: pid, BootID: boot}, fmt.Errorf("identify this process: %w", err)
	}
	// Without its pid namespace (a /proc of another one: readPidNS) the
	// rest is still this process's; the error says why its orders will
	// not start (Executor.Run).
	ns, err := readPidNS()
	return Process{PID: pid, PGID: st.pgrp, StartTime: st.startTime, BootID: boot, PidNS: ns}, err
}

// Gone reports whether the process p, as Self identified it (on this
// boot, in this pid namespace), has exited: its pid is free, a zombie's
// with no live thread, or another process's (another start time). False when p names another
// boot or another pid namespace, or says too little to judge, and when
// /proc cannot tell: only a process known dead is gone.
//
// The pid namespace matters because containers share the kernel's boot
// id: a live owner in another container (often its pid 1, as this
// process may be in its own) has a pid that here is free or another
// process's, and was judged gone, so a worker started beside it took an
// absent lease key it still held (TestWorkerStartedBesideALiveOwnerInAnotherPidNamespaceLeavesItTheHost).
func Gone(p Process) bool {
	if !judged(p) {
		return false
	}
	st, err := readStat(p.PID)
	if errors.Is(err, fs.ErrNotExist) {
		// A /proc mounted hidepid=2 (systemd's ProtectProc=invisible)
		// hides another user's processes as if they had exited: an
		// owner run as another user was judged gone
		// (TestGoneIsNotAProcessHiddenFromItsReader). Only the kernel's
		// own answer, no such process, says it is.
		return errors.Is(unix.Kill(p.PID, 0), unix.ESRCH)
	}
	if err != nil {
		return false
	}
	// A start time is read in the reader's time namespace: /proc adds its
	// boottime offset (unshare --time --boottime, a container restored by
	// CRIU). An owner that runs in another time namespace than its
	// reader's, in the same pid namespace, read another start than the
	// one it recorded, and was judged gone while it held the lease
	// (TestWorkerLeavesTheLeaseOfALiveHolderInAnotherTimeNamespace). The
	// start times compare only for a process in the reader's time
	// namespace; the owner recorded its own in its own.
	// A zombie whose other threads run on lives (threadsLive): its main
	// thread alone exited.
	exited := !st.alive() && !threadsLive(p.PID, st.startTime)
	return exited || st.startTime != p.StartTime && inOwnTimeNS(p.PID)
}
