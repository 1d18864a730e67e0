package executor

import (
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pipes are an order's stdin, stdout and stderr pipes. They are made here
// rather than by os/exec so that the child's ends can belong to the
// order's user: a command run as another user reopens them by name
// (`> /dev/stderr`, `cat /dev/stdin`, that is /proc/self/fd/N), which the
// kernel checks against the pipe's owner and its mode, 0600.
type pipes struct {
	owner  *syscall.Credential // the order's user; nil: the worker's own
	ends   []pipeEnds
	copies []func()   // begun once the child runs
	done   chan error // one value per copy
}

// pipeEnds are one pipe: the end the child inherits and the end the
// worker's copy uses (pollable, so a deadline can cut it short); input
// says the child reads it (stdin).
type pipeEnds struct {
	child, ours *os.File
	input       bool
}

func newPipes(owner *syscall.Credential) *pipes {
	return &pipes{owner: owner, done: make(chan error, 3)}
}

// output returns the write end for the child's stdout or stderr; once the
// child runs, everything written to it goes to dst.
func (p *pipes) output(dst *capture) (*os.File, error) {
	r, w, err := p.pipe(false)
	if err != nil {
		return nil, err
	}
	p.copies = append(p.copies, func() {
		_, err := dst.ReadFrom(r)
		p.done <- err
	})
	return w, nil
}

// input returns the read end for the child's stdin, fed with b once the
// child runs. A child that exits without reading it all ends the feed
// (EPIPE), which is not an error.
func (p *pipes) input(b []byte) (*os.File, error) {
	r, w, err := p.pipe(true)
	if err != nil {
		return nil, err
	}
	p.copies = append(p.copies, func() {
		_, err := w.Write(b)
		if errors.Is(err, syscall.EPIPE) {
			err = nil
		}
		_ = w.Close() // the child's EOF
		p.done <- err
	})
	return r, nil
}

// pipe makes a pipe whose read end (childReads) or write end is the
// child's, owned by the order's user.
func (p *pipes) pipe(childReads bool) (r, w *os.File, err error) {
	if r, w, err = os.Pipe(); err != nil {
		return nil, nil, err
	}
	e := pipeEnds{child: w, ours: r}
	if childReads {
		e = pipeEnds{child: r, ours: w, input: true}
	}
	p.ends = append(p.ends, e)
	if err := p.own(e.child); err != nil {
		return nil, nil, err
	}
	return r, w, nil
}

// own gives the child's end f to the order's user.
func (p *pipes) own(f *os.File) error {
	if p.owner == nil {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var chown error
	if err := rc.Control(func(fd uintptr) {
		chown = unix.Fchown(int(fd), int(p.owner.Uid), int(p.owner.Gid))
	}); err != nil {
		return err
	}
	return chown
}

// started closes the child's ends in this process (so that the child's
// exit is an EOF here) and begins the copies.
func (p *pipes) started() {
	for i := range p.ends {
		_ = p.ends[i].child.Close()
		p.ends[i].child = nil
	}
	for _, f := range p.copies {
		go f()
	}
}

// wait waits for the copies once the order's processes are gone: the
// pipes reach EOF unless a process that escaped the group still holds
// them, so after delay the copies of pipes still held are cut short, and
// wait says so. A pipe nobody else holds any more is read to its end
// (the copy is only slow: OnOutput is busy), since what is left in it is
// the order's own output. It closes every end.
func (p *pipes) wait(delay time.Duration) (cut bool, err error) {
	timer := time.NewTimer(delay)
	defer timer.Stop()
	timeout := timer.C
	for range p.copies {
		select {
		case e := <-p.done:
			if !errors.Is(e, os.ErrDeadlineExceeded) {
				err = errors.Join(err, e)
			}
			continue
		case <-timeout:
		}
		timeout = nil
		now := time.Now()
		for _, e := range p.ends {
			if e.held() {
				cut = true
				_ = e.ours.SetDeadline(now)
			}
		}
		if e := <-p.done; !errors.Is(e, os.ErrDeadlineExceeded) {
			err = errors.Join(err, e)
		}
	}
	p.close()
	return cut, err
}

// held reports whether a process still holds the child's end of the pipe:
// for an output pipe, a writer (no POLLHUP on our read end); for stdin, a
// reader (no POLLERR on our write end). When it cannot tell, it says held.
func (e pipeEnds) held() bool {
	rc, err := e.ours.SyscallConn()
	if err != nil {
		return true
	}
	gone := unix.POLLHUP
	if e.input {
		gone = unix.POLLERR
	}
	held := true
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		if n, err := unix.Poll(fds, 0); err == nil && n == 1 && fds[0].Revents&int16(gone) != 0 {
			held = false
		}
	})
	return held
}

// close closes every end left open (all of them when the child never
// started).
func (p *pipes) close() {
	for _, e := range p.ends {
		if e.child != nil {
			_ = e.child.Close()
		}
		_ = e.ours.Close()
	}
}
