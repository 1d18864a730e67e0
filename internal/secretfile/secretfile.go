// Package secretfile reads a secret that a process wrote for itself and
// takes as its own on its next start: serve's admin token, the embedded
// NATS server's seeds. Such a file is adopted, so it must be what the
// process left there and nothing else: a file another user planted (a
// token they know, in a directory that was theirs to write before it was
// chowned or chmodded), a symbolic or hard link to a file of the
// process's user kept for another use, or a FIFO (a read that never
// returns) is refused.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// maxSize bounds what Read reads: a secret is one line.
const maxSize = 64 << 10

// Error is Read's refusal of a file that is there but not the reader's
// own secret. Perm is the file's permission bits.
type Error struct {
	Path   string
	Reason string
	Perm   os.FileMode
	// Shared is set when the only fault is that others may read the file
	// (its mode): chmod 600 mends it.
	Shared bool
}

func (e *Error) Error() string { return e.Path + " " + e.Reason }

// Read returns the contents of path when it is a regular file, not
// reached through a symbolic link at its last component, with one name,
// owned by the effective user and readable by nobody else. It opens the
// file once and checks what it opened (no race between a check and the
// read), without blocking on a FIFO. A missing file's error satisfies
// errors.Is(err, fs.ErrNotExist); a file refused is an *Error.
func Read(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, &Error{Path: path, Reason: "is a symbolic link"}
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	perm := st.Mode().Perm()
	if !st.Mode().IsRegular() {
		return nil, &Error{Path: path, Perm: perm, Reason: fmt.Sprintf("is not a regular file (%s)", st.Mode().Type())}
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); int(sys.Uid) != uid {
			return nil, &Error{Path: path, Perm: perm, Reason: fmt.Sprintf("is owned by uid %d, not by the user reading it (uid %d)", sys.Uid, uid)}
		}
		if sys.Nlink != 1 {
			return nil, &Error{Path: path, Perm: perm, Reason: fmt.Sprintf("has %d names (a hard link, maybe to a file kept for another use)", sys.Nlink)}
		}
	}
	if perm&0o077 != 0 {
		return nil, &Error{Path: path, Perm: perm, Shared: true, Reason: fmt.Sprintf("is readable by others (mode %o)", perm)}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSize {
		return nil, &Error{Path: path, Perm: perm, Reason: fmt.Sprintf("is larger than a secret (over %d bytes)", maxSize)}
	}
	return b, nil
}
