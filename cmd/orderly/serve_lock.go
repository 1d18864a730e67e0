package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockDataDir takes an exclusive lock on the data dir for as long as this
// serve runs. Without it a second serve on the same dir (a second
// `make run`) would take the first one's PostgreSQL for one left over by a
// crash, adopt it, and stop it when it fails to bind NATS's port. The lock
// is a flock, so the kernel releases it when the process dies, however.
func lockDataDir(dataDir string) (release func(), err error) {
	path := filepath.Join(dataDir, "serve.lock")
	// Not through a symbolic link: one planted at its name (while the
	// data dir was another user's to write) had serve, as root, create
	// the file it named (/etc/nologin). Nor a FIFO or another user's file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("lock data dir: %s is a symbolic link: serve did not leave it so; delete it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := ownLockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock data dir: %s %w: serve did not leave it so; delete it", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another orderly serve is running on %s (it holds %s); stop it or use another --data-dir", dataDir, path)
		}
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	return func() { f.Close() }, nil
}

// ownLockFile refuses a lock file that is not a regular file of serve's
// user: another user's would let them hold the lock and keep serve from
// starting.
func ownLockFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("is not a regular file (%s)", st.Mode().Type())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("is owned by uid %d, not by the user serve runs as (uid %d)", sys.Uid, os.Geteuid())
	}
	return nil
}
