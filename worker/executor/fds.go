package executor

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeRangeCloexec is CLOSE_RANGE_CLOEXEC (linux/close_range.h, Linux
// 5.11), which x/sys/unix does not name.
const closeRangeCloexec = 1 << 2

// inheritNothing marks every descriptor of the worker from 3 up
// close-on-exec, so that an order's process gets its stdin, stdout and
// stderr and nothing else. The worker's own descriptors are all opened
// close-on-exec, but the ones it inherited are not: whatever its launcher
// left open (a shell's, a supervisor's pipe, a lock file) would otherwise
// pass to every order, as the order's user. It runs before each start,
// one system call, so a descriptor that appeared since is covered too.
func inheritNothing() error {
	err := unix.CloseRange(3, ^uint(0), closeRangeCloexec)
	if err == nil {
		return nil
	}
	if err != unix.ENOSYS && err != unix.EINVAL {
		return fmt.Errorf("close_range: %w", err)
	}
	// Before Linux 5.11: one fcntl per descriptor.
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list /proc/self/fd: %w", err)
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // closed meanwhile (the directory's own descriptor), or already marked
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("mark descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
