package executor

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// AwaitGone waits until p is Gone and returns nil, or returns ctx's error
// once ctx ends first. A standby of a holder that died on its machine
// waited the lease out, up to a lease after the holder's last renewal,
// though a worker restarted there takes the key at once
// (TestStandbyTakesTheHostOfAHolderThatDiesAtOnce). The wait costs
// nothing while p lives: it is a pidfd, readable once p has exited, in
// Go's poller. Without pidfds (a kernel before 5.3, or a pidfd the poller
// does not take) it is Gone read every check. A p Gone cannot judge (of
// another boot or pid namespace) is waited for until ctx ends: only a
// process known dead is gone; a frozen one (SIGSTOP) lives.
func AwaitGone(ctx context.Context, p Process, check time.Duration) error {
	if Gone(p) {
		return nil
	}
	if !judged(p) {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := awaitPidfd(ctx, p); !errors.Is(err, errNoPidfd) {
		return err
	}
	return pollGone(ctx, p, check)
}

// pollGone is AwaitGone without a pidfd: Gone read every check.
func pollGone(ctx context.Context, p Process, check time.Duration) error {
	t := time.NewTicker(check)
	defer t.Stop()
	for !Gone(p) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// errNoPidfd: p's exit cannot be waited for on a pidfd.
var errNoPidfd = errors.New("no pidfd to wait on")

// judged reports whether Gone can tell p's exit: p names this boot and
// this pid namespace, a pid and a start time.
func judged(p Process) bool {
	boot, err := readBootID()
	if err != nil || p.BootID == "" || p.BootID != boot || p.PID <= 0 || p.StartTime == 0 {
		return false
	}
	ns, err := readPidNS()
	return err == nil && p.PidNS != 0 && p.PidNS == ns
}

// awaitPidfd is AwaitGone on a pidfd of p's pid; errNoPidfd when there
// is none to wait on.
func awaitPidfd(ctx context.Context, p Process) error {
	fd, err := unix.PidfdOpen(p.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) && Gone(p) {
			return nil
		}
		return errNoPidfd
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	// The pid may have been another process's by the open: p exited
	// before it. Read after the open, Gone says so; if it says p lives,
	// the pidfd is p's.
	if Gone(p) {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return errNoPidfd
	}
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return errNoPidfd // not in the poller: its wait would fail at once
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		// Edge-triggered in the poller: a readable pidfd answered
		// "not yet" (an interrupted poll) would wait for an edge that
		// never comes.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		for errors.Is(err, unix.EINTR) {
			n, err = unix.Poll(pfd, 0)
		}
		return err != nil || n > 0 && pfd[0].Revents != 0
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return errNoPidfd
	case Gone(p):
		return nil
	}
	return errNoPidfd // readable, and not gone as Gone reads it: read it every check
}
